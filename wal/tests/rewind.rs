//! Moving the end of the log: `truncate_from` (drop a suffix) and `skip_to` (restart at a later
//! LSN), on real files in both write modes, and in a power-loss sweep on `CrashDisk` where a
//! dropped record must never come back and an acknowledged one must never go.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::path::Path;

use conformance::crash::Sweep;
use conformance::{CrashDisk, CrashMode, Rng};
use wal::{Wal, WalError};

/// The record at `lsn` written in `epoch` (each truncation starts a new epoch, so a record
/// dropped and written again differs from the one it replaces): 100 to 399 bytes.
fn payload(lsn: u64, epoch: u64) -> Vec<u8> {
    common::payload(
        lsn * 1_000 + epoch,
        100 + (lsn as usize * 37 + epoch as usize) % 300,
    )
}

async fn append_range<D: diskio::DiskIo>(log: &Wal<D>, from: u64, to: u64, epoch: u64) {
    for lsn in from..to {
        assert_eq!(log.append(&payload(lsn, epoch)).await.unwrap(), lsn);
    }
}

async fn check<D: diskio::DiskIo>(
    log: &Wal<D>,
    first: u64,
    next: u64,
    epoch_of: impl Fn(u64) -> u64,
) {
    let got = common::read_all(log, first).await;
    let want: Vec<(u64, Vec<u8>)> = (first..next)
        .map(|l| (l, payload(l, epoch_of(l))))
        .collect();
    assert_eq!(got.len(), want.len(), "records read back");
    assert!(got == want, "records read back differ");
    assert_eq!(log.next_lsn(), next);
}

fn both_modes(f: impl Fn(bool) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) {
    for direct in [false, true] {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f(direct));
    }
}

#[test]
fn truncate_from_drops_a_suffix_across_segments_and_appends_continue() {
    both_modes(|direct| {
        Box::pin(async move {
            let dir = conformance::harness::ScratchDir::new("rewind");
            let disk = diskio_blocking::BlockingDisk::with_defaults().unwrap();
            let (log, _) = Wal::open(disk.clone(), dir.path(), common::opts_direct(direct))
                .await
                .unwrap();
            // 64 KiB segments, ~250 B records: 600 records span three segments.
            append_range(&log, 1, 601, 0).await;
            // Inside the active segment.
            log.truncate_from(590).await.unwrap();
            check(&log, 1, 590, |_| 0).await;
            append_range(&log, 590, 600, 1).await;
            check(&log, 1, 600, |l| u64::from(l >= 590)).await;
            // Back into the first segment: the later ones go.
            log.truncate_from(100).await.unwrap();
            check(&log, 1, 100, |_| 0).await;
            append_range(&log, 100, 400, 2).await;
            let epoch = |l: u64| if l >= 100 { 2 } else { 0 };
            check(&log, 1, 400, epoch).await;
            // A no-op at the end, errors past it.
            log.truncate_from(400).await.unwrap();
            assert!(matches!(
                log.truncate_from(401).await,
                Err(WalError::NotAppended {
                    lsn: 401,
                    next: 400
                })
            ));
            log.close().await.unwrap();
            let (log, report) = Wal::open(disk, dir.path(), common::opts_direct(direct))
                .await
                .unwrap();
            assert_eq!(report.cut, None, "a truncation leaves nothing to cut");
            check(&log, 1, 400, epoch).await;
            // Everything, down to an empty log that continues at 1.
            log.truncate_from(1).await.unwrap();
            check(&log, 1, 1, |_| 0).await;
            append_range(&log, 1, 10, 3).await;
            check(&log, 1, 10, |_| 3).await;
            log.close().await.unwrap();
        })
    });
}

#[test]
fn truncate_from_below_the_retained_prefix_is_refused() {
    common::block_on(async {
        let dir = conformance::harness::ScratchDir::new("rewind");
        let disk = diskio_blocking::BlockingDisk::with_defaults().unwrap();
        let (log, _) = Wal::open(disk, dir.path(), common::opts()).await.unwrap();
        append_range(&log, 1, 601, 0).await;
        let first = log.truncate_before(500).await.unwrap();
        assert!(first > 1);
        match log.truncate_from(first - 1).await {
            Err(WalError::Truncated { lsn, first: f }) => assert_eq!((lsn, f), (first - 1, first)),
            other => panic!("expected Truncated, got {other:?}"),
        }
        // The log is untouched and takes appends.
        append_range(&log, 601, 603, 0).await;
        check(&log, first, 603, |_| 0).await;
        log.close().await.unwrap();
    });
}

#[test]
fn skip_to_restarts_the_log_at_a_later_lsn() {
    both_modes(|direct| {
        Box::pin(async move {
            let dir = conformance::harness::ScratchDir::new("rewind");
            let disk = diskio_blocking::BlockingDisk::with_defaults().unwrap();
            let opts = common::opts_direct(direct);
            let (log, _) = Wal::open(disk.clone(), dir.path(), opts.clone())
                .await
                .unwrap();
            append_range(&log, 1, 400, 0).await;
            assert!(matches!(
                log.skip_to(10).await,
                Err(WalError::SkipBackwards { lsn: 10, next: 400 })
            ));
            log.skip_to(1_000).await.unwrap();
            assert_eq!((log.first_lsn(), log.next_lsn()), (1_000, 1_000));
            assert!(common::read_all(&log, 1_000).await.is_empty());
            append_range(&log, 1_000, 1_010, 1).await;
            // Skipping to the next LSN of a log whose active segment starts there drops the
            // older segments only.
            log.skip_to(1_010).await.unwrap();
            append_range(&log, 1_010, 1_020, 1).await;
            log.close().await.unwrap();
            let (log, report) = Wal::open(disk, dir.path(), opts).await.unwrap();
            assert_eq!((report.first_lsn, report.next_lsn), (1_010, 1_020));
            check(&log, 1_010, 1_020, |_| 1).await;
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".tmp"))
                .collect();
            assert!(names.iter().all(|n| n.ends_with(".wal")), "{names:?}");
            log.close().await.unwrap();
        })
    });
}

#[test]
fn appends_racing_a_truncation_get_lsns_after_it() {
    common::block_on(async {
        let dir = conformance::harness::ScratchDir::new("rewind");
        let disk = diskio_blocking::BlockingDisk::with_defaults().unwrap();
        let (log, _) = Wal::open(disk, dir.path(), common::opts()).await.unwrap();
        append_range(&log, 1, 201, 0).await;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut lsns = Vec::new();
                    for i in 0..20u64 {
                        lsns.push(log.append(&payload(10_000 + w * 100 + i, 9)).await.unwrap());
                    }
                    lsns
                })
            })
            .collect();
        log.truncate_from(150).await.unwrap();
        let mut all = Vec::new();
        for w in writers {
            all.extend(w.await.unwrap());
        }
        // Every append was acknowledged with an LSN that is still in the log.
        let next = log.next_lsn();
        assert!(
            all.iter().all(|&l| l < next),
            "an acknowledged LSN was dropped: {all:?}, next {next}"
        );
        let read = common::read_all(&log, 1).await;
        assert_eq!(read.len() as u64, next - 1);
        for lsn in &all {
            assert!(read.iter().any(|(l, _)| l == lsn));
        }
        log.close().await.unwrap();
    });
}

// ---- the power-loss sweep ----

/// The log as the workload has been told it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    /// Records below this were asked to go (`truncate_before`, `skip_to`).
    purged: u64,
    /// Where a `skip_to` moved the start: records before it must be gone.
    floor: u64,
    next: u64,
    /// (first LSN, epoch) runs: the epoch each record was written in.
    epochs: Vec<(u64, u64)>,
}

impl Model {
    fn epoch_of(&self, lsn: u64) -> u64 {
        self.epochs
            .iter()
            .rev()
            .find(|(from, _)| *from <= lsn)
            .map_or(0, |r| r.1)
    }
    fn epoch(&self) -> u64 {
        self.epochs.last().map_or(0, |r| r.1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Append(usize),
    TruncateFrom(u64),
    TruncateBefore(u64),
    SkipTo(u64),
}

/// A seeded sequence of operations: mostly appends of 1 to 4 records, with truncations of the
/// last 1 to 40 records, retention, and two skips.
fn plan(rng: &mut Rng) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut next = 1u64;
    let mut first = 1u64;
    for i in 0..170 {
        let op = match i % 17 {
            8 if next - first > 2 => {
                Op::TruncateFrom(next - 1 - rng.below((next - first - 1).min(40)))
            }
            13 if next > 80 => Op::TruncateBefore(next - 60),
            16 if i % 3 == 0 => Op::SkipTo(next + rng.below(50)),
            _ => Op::Append(1 + rng.below(4) as usize),
        };
        match op {
            Op::Append(n) => next += n as u64,
            Op::TruncateFrom(l) => next = l,
            Op::TruncateBefore(_) => {}
            Op::SkipTo(l) => {
                next = l;
                first = l;
            }
        }
        ops.push(op);
    }
    ops
}

/// What the workload did: the model after the last operation that completed before the disk
/// froze, and after the one it froze in.
#[derive(Debug, Clone)]
struct Done {
    acked: Model,
    in_flight: Model,
}

async fn run_plan(disk: &CrashDisk, ops: &[Op], direct: bool) -> Done {
    let (log, _) = Wal::open(disk.clone(), Path::new("log"), common::opts_direct(direct))
        .await
        .unwrap();
    let mut model = Model {
        purged: 1,
        floor: 1,
        next: 1,
        epochs: vec![(1, 0)],
    };
    let mut done = None;
    for &op in ops {
        let before = model.clone();
        match op {
            Op::Append(n) => {
                let e = model.epoch();
                let records: Vec<Vec<u8>> = (model.next..model.next + n as u64)
                    .map(|l| payload(l, e))
                    .collect();
                let refs: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
                let last = log.append_batch(&refs).await.unwrap();
                assert_eq!(last, model.next + n as u64 - 1);
                model.next += n as u64;
            }
            Op::TruncateFrom(lsn) => {
                log.truncate_from(lsn).await.unwrap();
                model.next = lsn;
                let e = model.epoch() + 1;
                model.epochs.retain(|r| r.0 < lsn);
                model.epochs.push((lsn, e));
            }
            Op::TruncateBefore(lsn) => {
                log.truncate_before(lsn).await.unwrap();
                model.purged = model.purged.max(lsn);
            }
            Op::SkipTo(lsn) => {
                log.skip_to(lsn).await.unwrap();
                let e = model.epoch() + 1;
                model.next = lsn;
                model.purged = lsn;
                model.floor = lsn;
                model.epochs = vec![(lsn, e)];
            }
        }
        if done.is_none() && disk.is_frozen() {
            done = Some(Done {
                acked: before,
                in_flight: model.clone(),
            });
        }
    }
    log.close().await.unwrap();
    done.unwrap_or(Done {
        acked: model.clone(),
        in_flight: model,
    })
}

/// Whether the recovered records (`first`, then contiguous) agree with `m`: each one is the
/// model's (or, past its end, one the model's epoch would append next).
fn agrees(records: &[(u64, Vec<u8>)], m: &Model) -> bool {
    records.iter().all(|(lsn, data)| {
        *lsn >= m.floor
            && if *lsn < m.next {
                *data == payload(*lsn, m.epoch_of(*lsn))
            } else {
                *data == payload(*lsn, m.epoch())
            }
    })
}

async fn check_crashed(crashed: CrashDisk, done: &Done, direct: bool, what: &str) {
    let (log, report) = Wal::open(crashed, Path::new("log"), common::opts_direct(direct))
        .await
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    let first = report.first_lsn;
    let records = common::read_all(&log, first).await;
    for (i, (lsn, _)) in records.iter().enumerate() {
        assert_eq!(*lsn, first + i as u64, "{what}: the log is contiguous");
    }
    let next = first + records.len() as u64;
    assert_eq!(report.next_lsn, next, "{what}");
    let (a, b) = (&done.acked, &done.in_flight);
    assert!(
        agrees(&records, a) || agrees(&records, b),
        "{what}: a record that is neither the acknowledged log's nor the one being made \
         (a dropped record came back, or a record is corrupt); recovered {first}..{next}, \
         acknowledged {a:?}, in flight {b:?}"
    );
    // Nothing acknowledged is lost: every record both models keep is there.
    let must_end = a.next.min(b.next);
    let must_start = a.purged.max(b.purged);
    assert!(
        first <= must_start.max(a.floor.max(b.floor))
            && (must_start >= must_end || next >= must_end),
        "{what}: acknowledged records lost: recovered {first}..{next}, acknowledged {a:?}, \
         in flight {b:?} ({report:?})"
    );
    drop(log);
}

#[test]
fn every_crash_point_of_a_rewinding_workload_recovers() {
    rewinding_sweep(
        false,
        &[
            CrashMode::Random,
            CrashMode::TearAll,
            CrashMode::GarbageAll,
            CrashMode::DropAll,
            CrashMode::KeepAll,
        ],
    );
}

#[test]
fn every_crash_point_of_a_rewinding_workload_recovers_with_direct_io() {
    rewinding_sweep(
        true,
        &[
            CrashMode::RandomAtomic,
            CrashMode::TearAll,
            CrashMode::DropAll,
            CrashMode::KeepAll,
        ],
    );
}

fn rewinding_sweep(direct: bool, modes: &[CrashMode]) {
    let target = common::env_count("DISKIO_CRASH_STATES", 4_000);
    let seed = conformance::seed_from_env("DISKIO_SEED");
    let name = format!("rewinding power-loss sweep (direct_io {direct})");
    eprintln!("{name}: DISKIO_SEED={seed}, {target} crash states");
    let mut rng = Rng::new(seed);
    let ops = plan(&mut rng);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sweep = Sweep {
        name: name.clone(),
        target,
        seed,
        modes,
    };
    let report = rt.block_on(sweep.run(
        |disk| {
            let ops = &ops;
            async move { run_plan(&disk, ops, direct).await }
        },
        |done, _| async move {
            assert!(
                done.acked.next > 100,
                "the workload ends with a log: {done:?}"
            );
        },
        |crashed, done, what| async move { check_crashed(crashed, &done, direct, &what).await },
    ));
    eprintln!(
        "{name}: {} crash states at {} of {} crash points, 0 acknowledged records lost, 0 \
         dropped records back",
        report.states, report.reached, report.points
    );
}
