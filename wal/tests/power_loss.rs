//! The power-loss sweep: a group-commit workload on `CrashDisk` (appends, rotations, truncation
//! of old segments; directory entries durable only by a directory sync), crashed right after
//! every one of its I/O operations in turn, each crash point under several seeded fates of the
//! unsynced writes (kept, dropped, torn at 512-byte sectors, torn with garbage). Every state
//! must recover in `Strict` mode with every acknowledged record intact, nothing corrupt
//! returned, and the log a contiguous prefix of what was submitted.
//!
//! The sweep runs twice: with buffered segments, and with `direct_io`, where each group
//! rewrites the partly filled block the previous group ended in. The `direct_io` sweep leaves
//! out garbage: rewriting a block that holds acknowledged records is safe only on a device whose
//! sector writes are atomic (old or new bytes, both the same for those records), which is what
//! [`CrashMode::RandomAtomic`] and [`CrashMode::TearAll`] model. (Buffered logs rely on the same
//! property without the model seeing it: the kernel writes back whole pages, including the
//! synced records of a partly filled page.)
//!
//! `DISKIO_CRASH_STATES` sets how many crash states to reach (default 10,000); `DISKIO_SEED`
//! replays a run (the seed is printed).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::path::Path;

use conformance::crash::Sweep;
use conformance::{CrashDisk, CrashMode, Rng};
use wal::Wal;

/// Records the workload appends; with 64 KiB segments they fill two and start a third.
const RECORDS: u64 = 360;

use common::opts_direct as opts;

/// The record with LSN `lsn`: 100 to 399 bytes.
fn payload(lsn: u64) -> Vec<u8> {
    common::payload(lsn, 100 + (lsn as usize * 37) % 300)
}

/// What the workload did before the disk froze.
#[derive(Debug, Clone, Copy, Default)]
struct Done {
    /// The last LSN acknowledged.
    acked: u64,
    /// Records below this were asked to go (`truncate_before`), before the freeze or after.
    truncated_ever: u64,
}

/// The workload: batches of 1 to 4 records, each batch one `append_batch` (one group on this
/// current-thread runtime), and every 20 batches a `truncate_before` that keeps the last 60
/// records (so whole segments are deleted). Returns what was done before the disk froze.
async fn workload(disk: &CrashDisk, batches: &[usize], direct: bool) -> Done {
    let (log, _) = Wal::open(disk.clone(), Path::new("log"), opts(direct))
        .await
        .unwrap();
    let mut done = Done {
        truncated_ever: 1,
        ..Done::default()
    };
    let mut next = 1u64;
    for (i, &n) in batches.iter().enumerate() {
        let records: Vec<Vec<u8>> = (next..next + n as u64).map(payload).collect();
        let refs: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
        let last = log.append_batch(&refs).await.unwrap();
        next = last + 1;
        if !disk.is_frozen() {
            done.acked = last;
        }
        if i % 20 == 19 && next > 60 {
            let before = next - 60;
            done.truncated_ever = before;
            log.truncate_before(before).await.unwrap();
        }
    }
    log.close().await.unwrap();
    done
}

/// Recovers the crashed disk and checks it against what was acknowledged (and truncated).
async fn check(crashed: CrashDisk, done: Done, direct: bool, what: &str) {
    let acked = done.acked;
    let (log, report) = Wal::open(crashed, Path::new("log"), opts(direct))
        .await
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    // Truncation may have removed records below what it was asked for, never more.
    let first = report.first_lsn;
    assert!(
        first <= done.truncated_ever.max(1),
        "{what}: the log starts at {first}, past what was truncated ({done:?})"
    );
    let lsn = common::check_contiguous(&log, first, payload, what).await;
    assert!(
        lsn >= acked,
        "{what}: acknowledged records lost: recovered up to {lsn}, acknowledged {acked} ({report:?})"
    );

    assert_eq!(report.next_lsn, lsn + 1, "{what}");
    drop(log);
}

#[test]
fn every_crash_point_recovers_every_acknowledged_record() {
    sweep(
        false,
        &[
            CrashMode::Random,
            CrashMode::Random,
            CrashMode::TearAll,
            CrashMode::GarbageAll,
            CrashMode::DropAll,
            CrashMode::KeepAll,
        ],
    );
}

#[test]
fn every_crash_point_recovers_every_acknowledged_record_with_direct_io() {
    sweep(
        true,
        &[
            CrashMode::RandomAtomic,
            CrashMode::RandomAtomic,
            CrashMode::TearAll,
            CrashMode::DropAll,
            CrashMode::KeepAll,
        ],
    );
}

fn sweep(direct: bool, modes: &[CrashMode]) {
    let target = common::env_count("DISKIO_CRASH_STATES", 10_000);
    let seed = conformance::seed_from_env("DISKIO_SEED");
    let name = format!("power-loss sweep (direct_io {direct})");
    eprintln!("{name}: DISKIO_SEED={seed}, {target} crash states");
    let mut rng = Rng::new(seed);
    let mut batches = Vec::new();
    let mut total = 0;
    while total < RECORDS as usize {
        let n = 1 + rng.below(4) as usize;
        batches.push(n);
        total += n;
    }
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
            let batches = &batches;
            async move { workload(&disk, batches, direct).await }
        },
        |_, disk| async move {
            let names = diskio::DiskIo::list_dir(&disk, Path::new("log"))
                .await
                .unwrap();
            assert!(
                !names.contains(&wal::format::segment_name(1)),
                "the workload's truncation deleted the first segment: {names:?}"
            );
        },
        |crashed, done, what| async move { check(crashed, done, direct, &what).await },
    ));
    eprintln!(
        "{name}: {} crash states at {} of {} crash points, 0 acknowledged records lost, 0 \
         corrupt records returned",
        report.states, report.reached, report.points
    );
}
