//! Where a lone durable operation runs: on its caller's thread when that is a multi-thread
//! runtime's worker (no SQE reaches the ring), through the ring otherwise. A full `fsync`
//! (`SyncKind::All`, metadata too, tens of ms after a large write) always goes through the ring.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use diskio::{AlignedBuf, DiskIo, OpenOptions, SyncKind};
use diskio_raw::{RawDisk, RawOptions};

/// SQEs submitted by one lone `write_sync_at` and one lone `fsync(Data)`, then by one lone
/// `fsync(All)`, after checking that the write landed; `None` without io_uring.
fn sqes_of_lone_durable_ops(
    options: RawOptions,
    multi_thread: bool,
    name: &str,
) -> Option<(u64, u64)> {
    let disk = match RawDisk::new(options) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED {name}: no io_uring here: {e}");
            return None;
        }
    };
    let dir = std::env::temp_dir().join(format!("diskio-raw-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread().build()
    }
    .unwrap();
    let sqes = rt.block_on(async {
        let file = disk
            .open(&dir.join("f"), &OpenOptions::read_write_create())
            .await
            .unwrap();
        let before = disk.ring_stats().sqes;
        let buf = AlignedBuf::from_slice(b"durable", disk.alignment()).unwrap();
        let (res, _) = disk.write_sync_at(file, vec![buf], 0, SyncKind::Data).await;
        assert_eq!(res.unwrap(), 7);
        disk.fsync(file, SyncKind::Data).await.unwrap();
        let data = disk.ring_stats().sqes - before;
        disk.fsync(file, SyncKind::All).await.unwrap();
        let all = disk.ring_stats().sqes - before - data;
        let (res, back) = disk.read_at(file, disk.alloc(16).unwrap(), 0).await;
        assert_eq!(res.unwrap(), 7);
        assert_eq!(&back[..], b"durable");
        disk.close(file).await.unwrap();
        (data, all)
    });
    std::fs::remove_dir_all(&dir).unwrap();
    Some(sqes)
}

#[test]
fn lone_durable_ops_run_on_a_runtime_worker() {
    if let Some((data, all)) = sqes_of_lone_durable_ops(RawOptions::new(), true, "lone-here") {
        assert_eq!(
            data, 0,
            "a lone write_sync_at and fsync(Data) reached the ring"
        );
        assert_eq!(all, 1, "a lone fsync(All) went through the ring");
    }
}

#[test]
fn lone_durable_ops_go_through_the_ring_when_told_or_on_a_current_thread_runtime() {
    for (options, multi_thread, name) in [
        (RawOptions::new().lone_sync_here(false), true, "lone-off"),
        (RawOptions::new(), false, "lone-current-thread"),
    ] {
        if let Some((data, all)) = sqes_of_lone_durable_ops(options, multi_thread, name) {
            assert_eq!(data, 2, "{name}: one SQE each for the write and the sync");
            assert_eq!(all, 1, "{name}: one SQE for the full sync");
        }
    }
}
