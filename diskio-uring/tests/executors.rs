//! What is particular to this backend: its executor threads. A dead executor is an error and
//! never a hang, and only for the files pinned to it; dropping the backend waits for the work
//! in flight; bad options are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use std::path::PathBuf;
use std::time::Duration;

use diskio::{DiskIo, Error, OpenOptions, SyncKind};
use diskio_uring::{UringDisk, UringOptions};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diskio-uring-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Fails the test instead of hanging it.
async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(20), f).await {
        Ok(out) => out,
        Err(_) => panic!("{what} hung"),
    }
}

#[test]
fn a_dead_executor_fails_its_files_and_spares_the_others() {
    let dir = scratch("dead");
    let disk = UringDisk::new(UringOptions::new().executors(2)).unwrap();
    runtime().block_on(async {
        let opts = OpenOptions::read_write_create();
        // Round-robin: the first file goes to executor 0, the second to executor 1.
        let doomed = disk.open(&dir.join("a"), &opts).await.unwrap();
        let spared = disk.open(&dir.join("b"), &opts).await.unwrap();

        // Keep executor 0 busy, then kill it.
        let mut busy = Vec::new();
        for i in 0..64u64 {
            let disk = disk.clone();
            busy.push(tokio::spawn(async move {
                let buf = diskio::AlignedBuf::from_slice(&[7; 4096], 4096).unwrap();
                let (res, _) = disk
                    .write_sync_at(doomed, vec![buf], i * 4096, SyncKind::Data)
                    .await;
                res
            }));
        }
        disk.crash_executor_for_tests(0).await;

        // Every operation in flight at the crash finished or failed as `Shutdown`.
        for task in busy {
            match bounded("an operation in flight at the crash", task)
                .await
                .unwrap()
            {
                Ok(4096) | Err(Error::Shutdown { .. }) => {}
                other => panic!("unexpected result in flight: {other:?}"),
            }
        }
        // Later operations on its files fail at once, with buffers back where they were sent.
        let buf = disk.alloc(4096).unwrap();
        let (res, back) = bounded("a read after the crash", disk.read_at(doomed, buf, 0)).await;
        assert!(matches!(res, Err(Error::Shutdown { .. })), "{res:?}");
        assert_eq!(back.len(), 4096, "the buffer that never left comes back");
        let res = bounded("a sync after the crash", disk.fsync(doomed, SyncKind::All)).await;
        assert!(matches!(res, Err(Error::Shutdown { .. })), "{res:?}");

        // The other executor's file still works.
        let buf = diskio::AlignedBuf::from_slice(b"alive", 4096).unwrap();
        let (res, _) = disk
            .write_sync_at(spared, vec![buf], 0, SyncKind::Data)
            .await;
        assert_eq!(res.unwrap(), 5);
        let (res, back) = disk.read_at(spared, disk.alloc(16).unwrap(), 0).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(&back[..], b"alive");
    });
    // Dropping the backend joins the dead thread too, without hanging.
    drop(disk);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dropping_the_backend_runs_every_job_it_was_sent() {
    let dir = scratch("drop");
    let path = dir.join("f");
    let disk = UringDisk::with_defaults().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let file = disk
            .open(&path, &OpenOptions::read_write_create())
            .await
            .unwrap();
        for i in 0..256u64 {
            let buf = diskio::AlignedBuf::from_slice(&[i as u8; 512], 4096).unwrap();
            // Polled once, so the job is sent; then dropped before the reply.
            let write = disk.write_at(file, buf, i * 512);
            let _ = tokio::time::timeout(Duration::ZERO, write).await;
        }
    });
    // The drop returns once the executor has finished every job it was sent.
    drop(disk);
    let data = std::fs::read(&path).unwrap();
    let landed = data.chunks(512).enumerate();
    let landed = landed.filter(|(i, c)| c.len() == 512 && c.iter().all(|&b| b == *i as u8));
    // Each poll found room in the queue (1024 places, 256 jobs), so every write was sent.
    assert_eq!(
        landed.count(),
        256,
        "every sent write landed before the drop returned"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn options_out_of_range_are_refused() {
    let cases = [
        UringOptions::new().executors(0),
        UringOptions::new().executors(diskio_uring::EXECUTORS_MAX + 1),
        UringOptions::new().entries(0),
        UringOptions::new().entries(diskio_uring::ENTRIES_MAX + 1),
        UringOptions::new().queue_max(0),
        UringOptions::new().in_flight_max(0),
        UringOptions::new().in_flight_max(diskio_uring::QUEUE_MAX + 1),
        UringOptions::new().alignment(3000),
    ];
    for options in cases {
        let res = UringDisk::new(options.clone());
        assert!(
            matches!(res, Err(Error::InvalidInput { .. })),
            "{options:?}: {res:?}"
        );
    }
}

#[test]
fn futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let disk = UringDisk::with_defaults().unwrap();
    let id = diskio::FileId::from_raw(1);
    send(&disk.read_at(id, diskio::AlignedBuf::empty(), 0));
    send(&disk.write_sync_at(id, Vec::new(), 0, SyncKind::Data));
    send(&disk.open(std::path::Path::new("x"), &OpenOptions::new()));
    send(&disk.close(id));
}
