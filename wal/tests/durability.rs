//! Durability modes under power loss: `Sync` keeps every acknowledged record, `None` what a
//! `sync` covered, `Periodic` syncs on its own.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use common::{block_on, payload, read_all, small};

use std::path::PathBuf;
use std::sync::Arc;

use conformance::{CrashDisk, CrashMode, Rng};
use wal::{Durability, RecoveryMode, Wal, WalError, WalOptions};

/// 64 appenders write for a while; at a random moment the power goes. Every record acknowledged
/// before that moment is there after recovery, intact, and the log is a contiguous prefix.
/// Rounds alternate buffered logs, crashed with every fate (garbage included), and `direct_io`
/// logs, crashed with atomic sectors (see the power-loss sweep for why).
#[test]
fn power_loss_keeps_every_acknowledged_record() {
    let seed = conformance::seed_from_env("DISKIO_SEED");
    eprintln!("power_loss_keeps_every_acknowledged_record: DISKIO_SEED={seed}");
    let mut rng = Rng::new(seed);
    for round in 0..8 {
        let crash_seed = rng.next_u64();
        let wait_us = rng.below(20_000);
        let direct = round % 2 == 1;
        let (opts, mode) = if direct {
            (small(), CrashMode::RandomAtomic)
        } else {
            (small().direct_io(false), CrashMode::Random)
        };
        block_on(async move {
            let disk = CrashDisk::new();
            let dir = PathBuf::from("log");
            let (log, _) = Wal::open(disk.clone(), &dir, opts.clone()).await.unwrap();
            let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for t in 0..64u64 {
                let log = log.clone();
                let acked = Arc::clone(&acked);
                tasks.push(tokio::spawn(async move {
                    for k in 0..1000u64 {
                        let data = payload(t * 10_000 + k, 40 + (k % 7) as usize * 30);
                        match log.append(&data).await {
                            Ok(lsn) => acked.lock().unwrap().push((lsn, data)),
                            Err(_) => return,
                        }
                    }
                }));
            }
            tokio::time::sleep(std::time::Duration::from_micros(wait_us)).await;
            let before: Vec<(u64, Vec<u8>)> = acked.lock().unwrap().clone();
            let after = disk.crash_with(crash_seed, mode);
            for t in tasks {
                t.abort();
            }
            let (log2, report) = Wal::open(after, &dir, opts)
                .await
                .unwrap_or_else(|e| panic!("round {round}: recovery failed: {e}"));
            let got = read_all(&log2, 1).await;
            for (i, (lsn, _)) in got.iter().enumerate() {
                assert_eq!(*lsn, i as u64 + 1, "round {round}: contiguous");
            }
            for (lsn, data) in &before {
                let found = got.get(*lsn as usize - 1);
                assert_eq!(
                    found.map(|(_, d)| d),
                    Some(data),
                    "round {round}: acknowledged LSN {lsn} lost (report {report:?})"
                );
            }
            drop(log);
        });
    }
}

/// Unsynced appends return at once; `sync` makes them durable; a crash before it loses at most
/// what was not synced, and recovery (stopping at damage) keeps a contiguous prefix.
#[test]
fn unsynced_appends_are_durable_after_sync() {
    block_on(async {
        let disk = CrashDisk::new();
        let dir = PathBuf::from("log");
        let opts = small()
            .durability(Durability::None)
            .recovery(RecoveryMode::StopAtDamage);
        let (log, _) = Wal::open(disk.clone(), &dir, opts.clone()).await.unwrap();
        for i in 0..300u64 {
            assert_eq!(log.append(&payload(i, 200)).await.unwrap(), i + 1);
        }
        assert_eq!(log.sync().await.unwrap(), 300);
        assert!(log.durable_end() > 300);
        for i in 300..400u64 {
            log.append(&payload(i, 200)).await.unwrap();
        }
        let after = disk.crash_with(7, CrashMode::RandomAtomic);
        let (log2, report) = Wal::open(after, &dir, opts).await.unwrap();
        let got = read_all(&log2, 1).await;
        assert!(got.len() >= 300, "synced records survive: {report:?}");
        for (i, (lsn, data)) in got.iter().enumerate() {
            assert_eq!(*lsn, i as u64 + 1);
            assert_eq!(*data, payload(i as u64, 200));
        }
        log.close().await.unwrap();
        log2.close().await.unwrap();
    });
}

/// With `Periodic`, appends return at once and the timer makes them durable without a `sync`.
#[test]
fn periodic_durability_syncs_on_its_own() {
    block_on(async {
        let disk = CrashDisk::new();
        let opts = small().durability(Durability::Periodic(std::time::Duration::from_millis(10)));
        let (log, _) = Wal::open(disk.clone(), "log", opts).await.unwrap();
        for i in 0..50u64 {
            log.append(&payload(i, 100)).await.unwrap();
        }
        // No sync call: wait (up to 10 s, far above the interval) for the timer's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.durable_end() <= 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "the timer never synced"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(log.stats().syncs > 0);
        let after = disk.crash_with(3, conformance::CrashMode::DropAll);
        let (log2, report) = Wal::open(after, "log", small()).await.unwrap();
        assert_eq!(
            report.next_lsn, 51,
            "all 50 survive a crash that drops unsynced writes"
        );
        assert_eq!(read_all(&log2, 1).await.len(), 50);
        log.close().await.unwrap();
        log2.close().await.unwrap();
    });
    let r = block_on(Wal::open(
        CrashDisk::new(),
        "log",
        WalOptions::new().durability(Durability::Periodic(std::time::Duration::ZERO)),
    ));
    assert!(matches!(r, Err(WalError::InvalidOptions(_))));
}

/// On a filesystem that refuses `fallocate` (`EOPNOTSUPP`, as many FUSE filesystems do), every
/// durability mode opens, rotates, syncs and reopens with every record: segments that would be
/// preallocated are grown to their size instead.
#[test]
fn every_mode_works_where_fallocate_is_refused() {
    use conformance::{FailingDisk, FaultMode, FaultPlan, FaultTarget};
    block_on(async {
        let modes = [
            ("None", small().durability(Durability::None)),
            (
                "Periodic",
                small().durability(Durability::Periodic(std::time::Duration::from_millis(5))),
            ),
            ("Sync without zero_fill", small().zero_fill(false)),
        ];
        for (name, opts) in modes {
            let plan = FaultPlan::new(FaultTarget::Preallocate, 1)
                .mode(FaultMode::FromThenOn)
                .errno(libc::EOPNOTSUPP);
            let disk = Arc::new(FailingDisk::new(CrashDisk::new(), plan));
            let open = || {
                Wal::open(
                    Arc::clone(&disk) as Arc<dyn diskio::DynDiskIo>,
                    "log",
                    opts.clone(),
                )
            };
            let (log, _) = open()
                .await
                .unwrap_or_else(|e| panic!("{name}: open failed: {e}"));
            for i in 1..=300u64 {
                log.append(&payload(i, 500)).await.unwrap();
            }
            assert_eq!(log.sync().await.unwrap(), 300, "{name}");
            assert!(log.stats().rotations >= 2, "{name}: segments rotated");
            log.close().await.unwrap();
            assert!(
                disk.injected() >= 3,
                "{name}: fallocate was refused each time"
            );
            let (log, report) = open().await.unwrap();
            assert_eq!(report.records, 300, "{name}");
            let records = read_all(&log, 1).await;
            assert_eq!(records.len(), 300, "{name}");
            assert!(
                records
                    .iter()
                    .all(|(lsn, data)| *data == payload(*lsn, 500)),
                "{name}: a record changed"
            );
            log.close().await.unwrap();
        }
    });
}

/// Unsynced appends in small groups, many at once: the committer prepares each group while the
/// one before it is written, across rotations, on every backend, buffered and `O_DIRECT` (where
/// each group starts by writing again the last block of the one before). After a `sync`, a
/// close and a reopen, every record is there, intact and in order; a power cut after the sync
/// keeps them all.
#[test]
fn unsynced_groups_written_back_to_back_keep_every_record() {
    let opts = |direct: bool| {
        WalOptions::new()
            .durability(Durability::None)
            .segment_bytes(1 << 20)
            .group_bytes_max(16 << 10)
            .record_max(8 << 10)
            .direct_io(direct)
    };
    let expected = |lsn: u64| payload(lsn, 1 + (lsn as usize * 613) % 3000);
    let n = 4000u64;
    for backend in ["blocking", "raw", "uring"] {
        let Some(disk) = common::backend(backend) else {
            continue;
        };
        for direct in [false, true] {
            let what = format!("{backend}, direct {direct}");
            let scratch = conformance::harness::ScratchDir::new("wal-back-to-back");
            let dir = scratch.path().join("log");
            block_on(async {
                let (log, _) = Wal::open(Arc::clone(&disk), &dir, opts(direct))
                    .await
                    .unwrap();
                for lsn in 1..=n {
                    assert_eq!(log.append_nowait(&expected(lsn)).await.unwrap(), lsn);
                }
                assert_eq!(log.sync().await.unwrap(), n);
                let stats = log.stats();
                assert!(
                    stats.groups > 100 && stats.rotations > 2,
                    "{what}: {stats:?}"
                );
                log.close().await.unwrap();
                let (log, report) = Wal::open(Arc::clone(&disk), &dir, opts(direct))
                    .await
                    .unwrap();
                assert!(report.cut.is_none(), "{what}: {report:?}");
                let last = common::check_contiguous(&log, 1, expected, &what).await;
                assert_eq!(last, n, "{what}");
                log.close().await.unwrap();
            });
        }
    }
    // The same on the crash disk, then a power cut after the sync: nothing synced is lost.
    block_on(async {
        let disk = CrashDisk::new();
        let dir = PathBuf::from("log");
        let (log, _) = Wal::open(disk.clone(), &dir, opts(true)).await.unwrap();
        for lsn in 1..=n {
            log.append_nowait(&expected(lsn)).await.unwrap();
        }
        log.sync().await.unwrap();
        let after = disk.crash_with(11, CrashMode::RandomAtomic);
        let (log2, _) = Wal::open(after, &dir, opts(true)).await.unwrap();
        assert_eq!(
            common::check_contiguous(&log2, 1, expected, "crash disk").await,
            n
        );
        log.close().await.unwrap();
        log2.close().await.unwrap();
    });
}
