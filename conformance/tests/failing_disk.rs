//! `FailingDisk` fails exactly the operations its plan names, and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use conformance::harness::{Flavor, run};
use conformance::{FailingDisk, FaultMode, FaultPlan, FaultTarget};
use diskio::{AlignedBuf, DiskIo, OpenOptions, SyncKind};
use diskio_blocking::BlockingDisk;

fn buf(data: &[u8]) -> AlignedBuf {
    AlignedBuf::from_slice(data, 4096).unwrap()
}

#[test]
fn fails_the_nth_write_once_and_leaves_the_file_untouched() {
    run(
        "failing_nth_write",
        Flavor::MultiThread,
        BlockingDisk::with_defaults,
        |cx| async move {
            let disk = FailingDisk::new(
                BlockingDisk::with_defaults().unwrap(),
                FaultPlan::new(FaultTarget::Write, 3),
            );
            let f = disk
                .open(&cx.path("f"), &OpenOptions::read_write_create())
                .await
                .unwrap();
            for i in 0..5u8 {
                let data = [i; 10];
                let (res, back) = disk.write_at(f, buf(&data), u64::from(i) * 10).await;
                if i == 2 {
                    let err = res.unwrap_err();
                    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
                    assert_eq!(&back[..], &data, "the buffer comes back intact");
                } else {
                    assert_eq!(res.unwrap(), 10);
                }
            }
            assert_eq!((disk.matched(), disk.injected()), (5, 1));
            let (res, back) = disk.read_at(f, disk.alloc(50).unwrap(), 0).await;
            assert_eq!(res.unwrap(), 50);
            assert_eq!(
                &back[20..30],
                &[0; 10],
                "the failed write never reached the file"
            );
            assert_eq!(&back[30..40], &[3; 10]);
            // Syncs do not count towards a write plan.
            disk.fsync(f, SyncKind::Data).await.unwrap();
            conformance::harness::Outcome::Passed
        },
    );
}

#[test]
fn from_then_on_fails_every_later_matching_operation_with_the_chosen_errno() {
    run(
        "failing_from_then_on",
        Flavor::MultiThread,
        BlockingDisk::with_defaults,
        |cx| async move {
            let plan = FaultPlan::new(FaultTarget::Any, 2)
                .mode(FaultMode::FromThenOn)
                .errno(libc::ENOSPC);
            let disk = FailingDisk::new(BlockingDisk::with_defaults().unwrap(), plan);
            let f = disk
                .open(&cx.path("f"), &OpenOptions::read_write_create())
                .await
                .unwrap();
            let (res, _) = disk.write_at(f, buf(b"ok"), 0).await;
            res.unwrap();
            let err = disk.fsync(f, SyncKind::All).await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
            assert!(disk.set_len(f, 0).await.is_err());
            assert!(disk.preallocate(f, 0, 4096).await.is_err());
            let (res, back) = disk.writev_at(f, vec![buf(b"a"), buf(b"b")], 0).await;
            assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
            assert_eq!(back.len(), 2);
            // write_sync_at is a write and a sync here: the write fails first.
            let (res, _) = disk
                .write_sync_at(f, vec![buf(b"x")], 0, SyncKind::Data)
                .await;
            assert!(res.is_err());
            // Reads still work; disarming heals the disk.
            let (res, _) = disk.read_at(f, disk.alloc(2).unwrap(), 0).await;
            assert_eq!(res.unwrap(), 2);
            disk.disarm();
            disk.fsync(f, SyncKind::All).await.unwrap();
            assert_eq!(disk.injected(), 5);
            conformance::harness::Outcome::Passed
        },
    );
}

#[test]
fn sync_plan_counts_the_sync_half_of_write_sync() {
    run(
        "failing_write_sync",
        Flavor::CurrentThread,
        BlockingDisk::with_defaults,
        |cx| async move {
            let disk = FailingDisk::new(
                BlockingDisk::with_defaults().unwrap(),
                FaultPlan::new(FaultTarget::Sync, 1),
            );
            let f = disk
                .open(&cx.path("f"), &OpenOptions::read_write_create())
                .await
                .unwrap();
            let (res, _) = disk
                .write_sync_at(f, vec![buf(b"data")], 0, SyncKind::Data)
                .await;
            assert_eq!(
                res.unwrap_err().raw_os_error(),
                Some(libc::EIO),
                "never success for unsynced data"
            );
            let (res, _) = disk
                .write_sync_at(f, vec![buf(b"data")], 0, SyncKind::Data)
                .await;
            assert_eq!(res.unwrap(), 4);
            conformance::harness::Outcome::Passed
        },
    );
}

#[test]
fn passthrough_keeps_the_model() {
    conformance::model::check("failing_passthrough_model", || {
        BlockingDisk::with_defaults().map(FailingDisk::passthrough)
    });
}

#[test]
fn slow_writes_delay_the_files_named_and_change_nothing_else() {
    run(
        "failing_slow_writes",
        Flavor::MultiThread,
        BlockingDisk::with_defaults,
        |cx| async move {
            let disk = FailingDisk::passthrough(BlockingDisk::with_defaults().unwrap());
            let delay = std::time::Duration::from_millis(50);
            disk.slow_writes("slow-", delay);
            let opts = OpenOptions::read_write_create();
            let slow = disk.open(&cx.path("slow-f"), &opts).await.unwrap();
            let fast = disk.open(&cx.path("fast-f"), &opts).await.unwrap();
            let started = std::time::Instant::now();
            let (res, _) = disk.write_at(slow, buf(b"slow"), 0).await;
            assert_eq!(res.unwrap(), 4);
            let (res, _) = disk
                .write_sync_at(slow, vec![buf(b"sync")], 4, SyncKind::Data)
                .await;
            assert_eq!(res.unwrap(), 4);
            // A sleep lasts at least its length: two delayed writes take at least twice it.
            assert!(
                started.elapsed() >= 2 * delay,
                "both writes to slow-f waited"
            );
            let (res, _) = disk.write_at(fast, buf(b"fast"), 0).await;
            assert_eq!(res.unwrap(), 4);
            for (f, want) in [(slow, &b"slowsync"[..]), (fast, &b"fast"[..])] {
                let (res, back) = disk.read_at(f, disk.alloc(16).unwrap(), 0).await;
                assert_eq!(res.unwrap(), want.len());
                assert_eq!(&back[..], want, "the data landed");
            }
            assert_eq!(disk.injected(), 0, "nothing failed");
            conformance::harness::Outcome::Passed
        },
    );
}
