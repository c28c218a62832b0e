//! `O_DIRECT` mode: whole blocks, readers of fresh records served from memory, and the fallback
//! to buffered writes where the filesystem refuses `O_DIRECT`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use common::{block_on, payload, read_all, small};

use std::sync::Arc;

use conformance::{CrashDisk, FailingDisk, FaultMode, FaultPlan, FaultTarget};
use diskio::DiskIo;
use wal::{Wal, WalOptions};

/// With `direct_io`, a reader of fresh records takes them from the log's memory, not the
/// device: it reads nothing from the file (the segment's salt is known too, so not even its
/// header), where a buffered log reads its records from the file. Both read back the same
/// records.
#[test]
fn direct_io_readers_of_fresh_records_stay_off_the_device() {
    block_on(async {
        let mut reads = Vec::new();
        for direct in [false, true] {
            let disk = CrashDisk::new();
            let opts = WalOptions::new().direct_io(direct);
            let (log, _) = Wal::open(disk.clone(), "log", opts).await.unwrap();
            let mut expect = Vec::new();
            for i in 0..200u64 {
                let data = payload(i, 100 + (i as usize * 7) % 500);
                expect.push((log.append(&data).await.unwrap(), data));
            }
            let before = disk.stats().op(diskio::Op::Read).ops;
            assert_eq!(read_all(&log, 1).await, expect, "direct_io {direct}");
            reads.push(disk.stats().op(diskio::Op::Read).ops - before);
            log.close().await.unwrap();
        }
        assert_eq!(reads[1], 0, "direct_io: nothing comes from the file");
        assert!(
            reads[0] > 0,
            "buffered: the records come from the file ({reads:?})"
        );
    });
}

/// With `direct_io`, every group is written as whole 4 KiB blocks, the partly filled last block
/// again by the next group; the log reopens (from its file, not memory) with every record.
#[test]
fn direct_io_writes_whole_blocks_and_reopens_intact() {
    block_on(async {
        let disk = CrashDisk::new();
        let opts = small().direct_io(true);
        let (log, _) = Wal::open(disk.clone(), "log", opts.clone()).await.unwrap();
        let mut expect = Vec::new();
        for i in 0..120u64 {
            let data = payload(i, 10 + (i as usize * 131) % 900);
            expect.push((log.append(&data).await.unwrap(), data));
        }
        let stats = log.stats();
        assert_eq!(stats.bytes_written % 4096, 0, "{stats:?}");
        assert!(stats.bytes_written >= stats.groups * 4096, "{stats:?}");
        log.close().await.unwrap();
        let (log, report) = Wal::open(disk, "log", opts).await.unwrap();
        assert_eq!(report.records, 120);
        assert!(report.cut.is_none(), "{report:?}");
        assert_eq!(read_all(&log, 1).await, expect);
        // Appends after reopening rewrite the recovered tail block correctly too.
        assert_eq!(log.append(b"after").await.unwrap(), 121);
        let all = read_all(&log, 119).await;
        assert_eq!(all.last().map(|r| r.1.as_slice()), Some(&b"after"[..]));
        log.close().await.unwrap();
    });
}

/// Where the filesystem refuses `O_DIRECT`, the default log writes through the page cache
/// instead and says so; asked for buffered writes, it never tries `O_DIRECT`.
#[test]
fn a_filesystem_refusing_direct_io_falls_back_to_buffered_writes() {
    block_on(async {
        let refusing = |nth| {
            let plan = FaultPlan::new(FaultTarget::DirectOpen, nth)
                .mode(FaultMode::FromThenOn)
                .errno(libc::EINVAL);
            Arc::new(FailingDisk::new(CrashDisk::new(), plan))
        };
        let disk = refusing(1);
        let open = || {
            Wal::open(
                Arc::clone(&disk) as Arc<dyn diskio::DynDiskIo>,
                "log",
                small(),
            )
        };
        let (log, _) = open().await.unwrap();
        assert!(!log.is_direct_io(), "the refusal was noticed");
        for i in 0..50u64 {
            log.append(&payload(i, 300)).await.unwrap();
        }
        assert_eq!(read_all(&log, 1).await.len(), 50);
        log.close().await.unwrap();
        let (log, report) = open().await.unwrap();
        assert_eq!(report.records, 50);
        assert!(!log.is_direct_io());
        assert!(disk.injected() >= 2, "each open tried O_DIRECT once");
        log.close().await.unwrap();

        // Where it works, it is used; with direct_io(false) it is never asked for.
        let disk = refusing(u64::MAX);
        let (log, _) = Wal::open(
            Arc::clone(&disk) as Arc<dyn diskio::DynDiskIo>,
            "log",
            small(),
        )
        .await
        .unwrap();
        assert!(log.is_direct_io());
        log.close().await.unwrap();
        let disk = refusing(1);
        let opts = small().direct_io(false);
        let (log, _) = Wal::open(Arc::clone(&disk) as Arc<dyn diskio::DynDiskIo>, "log", opts)
            .await
            .unwrap();
        assert!(!log.is_direct_io());
        log.append(b"x").await.unwrap();
        log.close().await.unwrap();
        assert_eq!(disk.injected(), 0, "no O_DIRECT open was attempted");
    });
}
