//! An `EIO` from the disk's sync, under real backends: the log on the power-cutting filesystem
//! (`conformance::powercut`), eight appenders, one sync failed by the filesystem (once: the
//! fsyncgate case, where a retry would succeed and the data would be gone). The log poisons:
//! every appender gets an error, every append after that fails too, and after a power cut every
//! record that was acknowledged is there. On each backend, buffered and `O_DIRECT`; a skip where
//! FUSE is not available.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use conformance::harness::{ScratchDir, report_skip};
use conformance::powercut::{Cut, PowerCutFs};
use conformance::{FaultMode, FaultPlan, FaultTarget};
use wal::{Wal, WalError, WalOptions};

const TASKS: u64 = 8;
/// Appends each task makes before the fault is armed (in total).
const BEFORE: u64 = 200;
/// A task that is still acknowledged this many appends after the fault has not been stopped.
const CAP: u64 = 5_000;

fn eio_poisons(backend: &str) {
    let label = format!("wal-eio-{}", backend.replace('+', "-"));
    if common::backend(backend).is_none() {
        return;
    }
    let scratch = ScratchDir::new(&label);
    let at = scratch.path().join("mnt");
    std::fs::create_dir_all(&at).unwrap();
    let fs = match PowerCutFs::mount(&at) {
        Ok(fs) => Arc::new(fs),
        Err(reason) => return report_skip(&label, &reason),
    };
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
