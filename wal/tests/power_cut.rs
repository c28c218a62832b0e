//! The log on the power-cutting filesystem (`conformance::powercut`), under real backends; a
//! skip where FUSE is not available.
//!
//! - An `EIO` from the disk's sync: eight appenders, one sync failed by the filesystem (once:
//!   the fsyncgate case, where a retry would succeed and the data would be gone). The log
//!   poisons: every appender gets an error, every append after that fails too, and after a
//!   power cut every record that was acknowledged is there. On each backend, buffered and
//!   `O_DIRECT`.
//! - A filesystem that refuses `fallocate` (as LazyFS does): every durability mode opens,
//!   appends across segments, and reads back after a close and a power cut.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use conformance::harness::{ScratchDir, report_skip};
use conformance::powercut::{Cut, PowerCutFs};
use conformance::{FaultMode, FaultPlan, FaultTarget};
use wal::{Durability, Wal, WalError, WalOptions};

const TASKS: u64 = 8;
/// Appends each task makes before the fault is armed (in total).
const BEFORE: u64 = 200;
/// A task that is still acknowledged this many appends after the fault has not been stopped.
const CAP: u64 = 5_000;

/// A power-cutting filesystem mounted in a scratch directory for a test on `backend`, or
/// `None` (with a printed skip) where the backend or FUSE is not available.
fn mounted(test: &str, backend: &str) -> Option<(ScratchDir, PowerCutFs)> {
    let label = format!("wal-{test}-{}", backend.replace('+', "-"));
    common::backend(backend)?;
    let scratch = ScratchDir::new(&label);
    let at = scratch.path().join("mnt");
    std::fs::create_dir_all(&at).unwrap();
    match PowerCutFs::mount(&at) {
        Ok(fs) => Some((scratch, fs)),
        Err(reason) => {
            report_skip(&label, &reason);
            None
        }
    }
}

fn eio_poisons(backend: &str) {
    let Some((_scratch, fs)) = mounted("eio", backend) else {
        return;
    };
    let fs = Arc::new(fs);
    let at = fs.path().to_path_buf();
    let dir = at.join("log");
    let opts = WalOptions::new()
        .segment_bytes(256 << 10)
        .record_max(4 << 10)
        .direct_io(backend.ends_with("+direct"));
    let acked: Vec<(u64, Vec<u8>)> = common::block_on(async {
        let disk = common::backend(backend).unwrap();
        let (log, _) = Wal::open(disk, &dir, opts.clone()).await.unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (log, count, fs) = (log.clone(), Arc::clone(&count), Arc::clone(&fs));
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for k in 0..CAP {
                        let data = common::payload(t << 32 | k, 64 + (k % 200) as usize);
                        match log.append(&data).await {
                            Ok(lsn) => acked.push((lsn, data)),
                            Err(e) => {
                                assert!(
                                    matches!(e, WalError::Poisoned { .. } | WalError::Io(_)),
                                    "task {t}: {e}"
                                );
                                // Nothing is acknowledged after it.
                                let again = log.append(b"after").await;
                                assert!(
                                    matches!(again, Err(WalError::Poisoned { .. })),
                                    "task {t}: an append after the failure: {again:?}"
                                );
                                return (acked, true);
                            }
                        }
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == BEFORE {
                            fs.arm(Some(
                                FaultPlan::new(FaultTarget::Sync, 1).mode(FaultMode::Once),
                            ));
                        }
                    }
                    (acked, false)
                })
            })
            .collect();
        let mut all = Vec::new();
        for (t, task) in tasks.into_iter().enumerate() {
            let (acked, stopped) = task.await.unwrap();
            assert!(
                stopped,
                "{backend}: task {t} was never told of the failed sync"
            );
            all.extend(acked);
        }
        assert_eq!(fs.injected(), 1, "{backend}: one sync failed");
        all
    });
    // The power goes; what was acknowledged is on the disk.
    let cut = fs.power_cut(Cut::ragged(conformance::seed_from_env("DISKIO_SEED")));
    common::block_on(async {
        let disk = common::backend(backend).unwrap();
        let (log, _) = Wal::open(disk, &dir, opts).await.unwrap();
        let got = common::read_all(&log, 1).await;
        for (lsn, data) in &acked {
            let found = got.iter().find(|(l, _)| l == lsn).map(|(_, d)| d);
            assert!(
                found == Some(data),
                "{backend}: acknowledged LSN {lsn} lost or changed after the failed sync \
                 and a power cut ({cut:?})"
            );
        }
        log.close().await.unwrap();
    });
    eprintln!(
        "{backend}: poisoned by one failed sync; {} acknowledged records, all there after the cut",
        acked.len()
    );
}

#[test]
fn sync_eio_poisons_blocking() {
    eio_poisons("blocking");
}

#[test]
fn sync_eio_poisons_blocking_direct_io() {
    eio_poisons("blocking+direct");
}

#[test]
fn sync_eio_poisons_raw() {
    eio_poisons("raw");
}

#[test]
fn sync_eio_poisons_raw_direct_io() {
    eio_poisons("raw+direct");
}

#[test]
fn sync_eio_poisons_uring() {
    eio_poisons("uring");
}

#[test]
fn sync_eio_poisons_uring_direct_io() {
    eio_poisons("uring+direct");
}

/// Every durability mode on a filesystem that refuses `fallocate`, on `backend`.
fn without_fallocate(backend: &str) {
    let Some((_scratch, fs)) = mounted("no-fallocate", backend) else {
        return;
    };
    let at = fs.path().to_path_buf();
    fs.refuse_fallocate(true);
    let modes = [
        ("sync", Durability::Sync),
        ("none", Durability::None),
        (
            "periodic",
            Durability::Periodic(std::time::Duration::from_millis(5)),
        ),
    ];
    for (name, durability) in modes {
        let refused_before = fs.fallocates_refused();
        let dir = at.join(name);
        let opts = WalOptions::new()
            .durability(durability)
            .segment_bytes(64 << 10)
            .record_max(4 << 10)
            .direct_io(backend.ends_with("+direct"));
        let written: Vec<Vec<u8>> = (0..300u64)
            .map(|i| common::payload(i, 100 + (i % 300) as usize))
            .collect();
        common::block_on(async {
            let disk = common::backend(backend).unwrap();
            let (log, _) = Wal::open(disk, &dir, opts.clone())
                .await
                .unwrap_or_else(|e| panic!("{backend}, {name}: open without fallocate: {e}"));
            for rec in &written {
                log.append(rec).await.unwrap();
            }
            log.close().await.unwrap();
        });
        if durability != Durability::Sync {
            assert!(
                fs.fallocates_refused() > refused_before,
                "{backend}, {name}: the log never asked to preallocate, so the test proves nothing"
            );
        }
        fs.power_cut(Cut::clean(0));
        common::block_on(async {
            let disk = common::backend(backend).unwrap();
            let (log, _) = Wal::open(disk, &dir, opts).await.unwrap();
            let got = common::read_all(&log, 1).await;
            let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
            assert!(
                got == written,
                "{backend}, {name}: read back {} of {} records after close and a power cut",
                got.len(),
                written.len()
            );
            log.close().await.unwrap();
        });
    }
}

#[test]
fn every_mode_without_fallocate_blocking() {
    without_fallocate("blocking");
}

#[test]
fn every_mode_without_fallocate_raw_direct_io() {
    without_fallocate("raw+direct");
}

#[test]
fn every_mode_without_fallocate_uring() {
    without_fallocate("uring");
}
