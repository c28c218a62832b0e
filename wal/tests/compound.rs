//! Compound failure: recovery itself meets an I/O error (at its Nth operation, for every N, once
//! and from then on), possibly followed by a power loss; a later clean recovery still loses
//! nothing acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::path::Path;
use std::sync::Arc;

use conformance::{CrashDisk, CrashMode, FailingDisk, FaultMode, FaultPlan, FaultTarget};
use diskio::DiskIo;
use wal::Wal;

use common::opts;

/// The record with LSN `lsn`: 100 to 599 bytes.
fn payload(lsn: u64) -> Vec<u8> {
    common::payload(lsn ^ 0xC0C0, 100 + (lsn as usize * 61) % 500)
}

/// A log of `records` acknowledged records whose last segment ends in a torn write, so that
/// recovery has work to do (zero the tail, sync, prepare the next segment).
async fn torn_log(records: u64) -> CrashDisk {
    let disk = CrashDisk::new().strict_directories();
    let (log, _) = Wal::open(disk.clone(), Path::new("log"), opts())
        .await
        .unwrap();
    for lsn in 1..=records {
        assert_eq!(log.append(&payload(lsn)).await.unwrap(), lsn);
    }
    log.close().await.unwrap();
    let names = disk.list_dir(Path::new("log")).await.unwrap();
    let last = Path::new("log").join(names.last().unwrap());
    let image = disk.file_image(&last).unwrap();
    let end = image.iter().rposition(|&b| b != 0).unwrap() + 1;
    disk.damage(&last, end.div_ceil(8) as u64 * 8, &[0x5A; 700])
        .unwrap();
    disk
}

async fn clean_recovery(disk: CrashDisk, records: u64, what: &str) {
    let (log, report) = Wal::open(disk, Path::new("log"), opts())
        .await
        .unwrap_or_else(|e| panic!("{what}: the clean recovery failed: {e}"));
    let lsn = common::check_contiguous(&log, 1, payload, what).await;
    assert_eq!(
        lsn, records,
        "{what}: acknowledged records lost ({report:?})"
    );
    assert_eq!(log.append(b"again").await.unwrap(), records + 1, "{what}");
}

#[test]
fn a_failing_recovery_leaves_the_log_recoverable() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let records = 250;
        let mut runs = 0;
        for mode in [FaultMode::Once, FaultMode::FromThenOn] {
            let mut n = 1;
            loop {
                let disk = torn_log(records).await;
                let failing = Arc::new(FailingDisk::new(
                    disk.clone(),
                    FaultPlan::new(FaultTarget::Any, n).mode(mode),
                ));
                let opened = Wal::open(
                    Arc::clone(&failing) as Arc<dyn diskio::DynDiskIo>,
                    Path::new("log"),
                    opts(),
                )
                .await;
                if let Ok((log, _)) = opened {
                    drop(log);
                }
                let what = format!("{mode:?}, recovery's operation {n} failing");
                // The power loss first: the clean recovery below appends to the live disk.
                // The log writes with O_DIRECT (the default), which relies on atomic sector
                // writes: see the power-loss sweep.
                let crashed = disk.crash_with(n, CrashMode::RandomAtomic);
                clean_recovery(disk.clone(), records, &what).await;
                clean_recovery(crashed, records, &format!("{what}, then a power loss")).await;
                runs += 1;
                if failing.injected() == 0 {
                    assert!(n > 3, "recovery did some I/O ({n})");
                    break;
                }
                n += 1;
            }
        }
        eprintln!("compound failure: {runs} failing recoveries, each recovered cleanly after");
    });
}
