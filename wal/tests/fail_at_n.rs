//! Fail at N: the same workload with its Nth I/O operation failing, for N = 1, 2, … until the
//! workload completes without reaching a fault; once with that one failure, once with every
//! operation failing from N on, once with ENOSPC. At every N: nothing acknowledged after the
//! fault; reopened without faults (as it is, and after a power loss), every acknowledged record
//! is there, intact, and the log is a contiguous prefix of what was submitted.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::path::Path;
use std::sync::Arc;

use conformance::{CrashDisk, CrashMode, FailingDisk, FaultMode, FaultPlan, FaultTarget};
use diskio::DynDiskIo;
use wal::{Wal, WalError};

const RECORDS: u64 = 200;

use common::opts_direct as opts;

/// The record with LSN `lsn`: 200 to 599 bytes.
fn payload(lsn: u64) -> Vec<u8> {
    common::payload(lsn ^ 0xFA11, 200 + (lsn as usize * 53) % 400)
}

/// Runs the workload on a disk that fails as `plan` says; returns the last LSN acknowledged and
/// how many faults were injected.
async fn workload(inner: &CrashDisk, plan: FaultPlan, direct: bool) -> (u64, u64) {
    let disk = Arc::new(FailingDisk::new(inner.clone(), plan));
    let opened = Wal::open(
        Arc::clone(&disk) as Arc<dyn DynDiskIo>,
        Path::new("log"),
        opts(direct),
    )
    .await;
    let Ok((log, _)) = opened else {
        return (0, disk.injected());
    };
    let mut acked = 0;
    let mut failed: Option<WalError> = None;
    let mut next = 1;
    while next <= RECORDS {
        let batch: Vec<Vec<u8>> = (next..(next + 3).min(RECORDS + 1)).map(payload).collect();
        let refs: Vec<&[u8]> = batch.iter().map(|r| &r[..]).collect();
        match log.append_batch(&refs).await {
            Ok(last) => {
                assert!(
                    failed.is_none(),
                    "{plan:?}: LSN {last} acknowledged after the failure {failed:?}"
                );
                acked = last;
            }
            Err(e) => {
                assert!(
                    matches!(e, WalError::Poisoned { .. }),
                    "{plan:?}: a failure is reported as poison, not {e}"
                );
                failed.get_or_insert(e);
            }
        }
        next += refs.len() as u64;
    }
    if failed.is_none() {
        // The fault may also fall on the closing sync.
        if let Err(e) = log.close().await {
            assert!(matches!(e, WalError::Poisoned { .. }), "{e}");
        }
    }
    (acked, disk.injected())
}

async fn check(disk: CrashDisk, acked: u64, direct: bool, what: &str) {
    let (log, report) = Wal::open(disk, Path::new("log"), opts(direct))
        .await
        .unwrap_or_else(|e| panic!("{what}: reopening without faults failed: {e}"));
    let lsn = common::check_contiguous(&log, 1, payload, what).await;
    assert!(
        lsn >= acked,
        "{what}: acknowledged up to {acked}, recovered up to {lsn} ({report:?})"
    );
}

#[test]
fn every_failing_operation_loses_nothing_acknowledged() {
    fail_at_every_n(false);
}

/// The same with `direct_io` (power losses keep sector writes atomic: see the power-loss sweep).
#[test]
fn every_failing_operation_loses_nothing_acknowledged_with_direct_io() {
    fail_at_every_n(true);
}

fn fail_at_every_n(direct: bool) {
    let power_loss = if direct {
        CrashMode::RandomAtomic
    } else {
        CrashMode::Random
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kinds = [
        ("EIO once", FaultMode::Once, libc::EIO),
        ("EIO from then on", FaultMode::FromThenOn, libc::EIO),
        ("ENOSPC from then on", FaultMode::FromThenOn, libc::ENOSPC),
    ];
    rt.block_on(async {
        for (name, mode, errno) in kinds {
            let mut n = 1;
            loop {
                let plan = FaultPlan::new(FaultTarget::Any, n).mode(mode).errno(errno);
                let inner = CrashDisk::new().strict_directories();
                let (acked, injected) = workload(&inner, plan, direct).await;
                let what = format!("{name}, operation {n} failing, direct_io {direct}");
                check(inner.clone(), acked, direct, &what).await;
                check(
                    inner.crash_with(n, power_loss),
                    acked,
                    direct,
                    &format!("{what}, then a power loss"),
                )
                .await;
                // What Linux does after a failed fsync: the dirty pages are dropped, and a later
                // sync would succeed. Nothing acknowledged may depend on them.
                check(
                    inner.crash_with(n, CrashMode::DropAll),
                    acked,
                    direct,
                    &format!("{what}, unsynced data dropped"),
                )
                .await;
                if injected == 0 {
                    eprintln!(
                        "fail at N ({name}, direct_io {direct}): the workload runs {} operations",
                        n - 1
                    );
                    assert!(n > 100, "the workload reached few operations: {n}");
                    break;
                }
                n += 1;
            }
        }
    });
}
