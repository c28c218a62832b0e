//! Failures: the first failed write or sync poisons the log, and nothing is acknowledged after
//! it; a runtime shut down midway never leaves a caller hanging.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use common::{block_on, payload, read_all, small};

use std::path::PathBuf;
use std::sync::Arc;

use conformance::harness::ScratchDir;
use conformance::{CrashDisk, CrashMode, FailingDisk, FaultMode, FaultPlan, FaultTarget, Rng};
use wal::{Wal, WalError};

async fn poisoned_by(plan: FaultPlan) {
    let disk = Arc::new(FailingDisk::passthrough(CrashDisk::new()));
    let dir = PathBuf::from("log");
    let (log, _) = Wal::open(
        Arc::clone(&disk) as Arc<dyn diskio::DynDiskIo>,
        &dir,
        small(),
    )
    .await
    .unwrap();
    let mut acked = Vec::new();
    for i in 0..20u64 {
        acked.push(log.append(&payload(i, 100)).await.unwrap());
    }
    disk.arm(plan);
    let mut failed = None;
    for i in 20..200u64 {
        match log.append(&payload(i, 100)).await {
            Ok(lsn) => {
                assert!(failed.is_none(), "acknowledged LSN {lsn} after a failure");
                acked.push(lsn);
            }
            Err(WalError::Poisoned { cause }) => {
                failed.get_or_insert(cause);
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let cause = failed.expect("the fault poisoned the log");
    assert_eq!(cause.raw_os_error(), Some(plan.errno), "{cause}");
    assert!(matches!(log.sync().await, Err(WalError::Poisoned { .. })));
    assert!(matches!(
        log.append(b"x").await,
        Err(WalError::Poisoned { .. })
    ));
    disk.disarm();
    drop(log);
    // A direct_io log (the default) relies on atomic sector writes: see the power-loss sweep.
    let crashed = disk
        .inner()
        .crash_with(Rng::new(plan.nth).next_u64(), CrashMode::RandomAtomic);
    let (log, report) = Wal::open(crashed, &dir, small()).await.unwrap();
    let got = read_all(&log, 1).await;
    assert!(report.next_lsn > *acked.last().unwrap(), "{report:?}");
    for lsn in acked {
        assert_eq!(
            got[lsn as usize - 1],
            (lsn, payload(lsn - 1, 100)),
            "acknowledged {lsn}"
        );
    }
}

#[test]
fn a_failed_write_poisons_the_log() {
    block_on(poisoned_by(FaultPlan::new(FaultTarget::Write, 3)));
}

#[test]
fn a_failed_sync_poisons_the_log() {
    block_on(poisoned_by(FaultPlan::new(FaultTarget::Sync, 2)));
}

#[test]
fn a_full_disk_poisons_the_log() {
    block_on(poisoned_by(
        FaultPlan::new(FaultTarget::Any, 5)
            .mode(FaultMode::FromThenOn)
            .errno(libc::ENOSPC),
    ));
}

/// A runtime shut down while its tasks append and commit: later calls from another runtime
/// complete (poisoned if a group was cut off midway, fine otherwise), never hang.
#[test]
fn a_runtime_shut_down_midway_never_leaves_callers_hanging() {
    let scratch = ScratchDir::new("wal-shutdown");
    let dir = scratch.path().join("log");
    let disk: Arc<dyn diskio::DynDiskIo> =
        Arc::new(diskio_blocking::BlockingDisk::with_defaults().unwrap());
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let log = first
        .block_on(Wal::open(Arc::clone(&disk), &dir, small()))
        .unwrap()
        .0;
    first.block_on(async {
        for t in 0..32u64 {
            let log = log.clone();
            tokio::spawn(async move {
                for k in 0.. {
                    if log.append(&payload(t * 100_000 + k, 200)).await.is_err() {
                        return;
                    }
                }
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    });
    drop(first);
    block_on(async {
        let r = tokio::time::timeout(std::time::Duration::from_secs(30), log.append(b"after"))
            .await
            .expect("an append after the shutdown completes");
        assert!(matches!(r, Ok(_) | Err(WalError::Poisoned { .. })), "{r:?}");
    });
    drop(log);
    // Whatever happened, the directory recovers.
    block_on(async {
        let (log, _) = Wal::open(disk, &dir, small()).await.unwrap();
        let got = read_all(&log, 1).await;
        for (i, (lsn, _)) in got.iter().enumerate() {
            assert_eq!(*lsn, i as u64 + 1);
        }
        log.close().await.unwrap();
    });
}
