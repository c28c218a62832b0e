//! The WAL suite, run on every backend available here and on the fault-injecting disks.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use conformance::harness::ScratchDir;
use conformance::{CrashDisk, CrashMode, FailingDisk, FaultMode, FaultPlan, FaultTarget, Rng};
use diskio::DiskIo;
use wal::{Durability, RecoveryMode, Wal, WalError, WalOptions};

/// Small segments, so rotation happens in every test.
fn small() -> WalOptions {
    WalOptions::new()
        .segment_bytes(64 << 10)
        .record_max(8 << 10)
}

fn payload(lsn_hint: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(lsn_hint.wrapping_mul(0x9E37_79B9) ^ len as u64);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

async fn read_all<D: DiskIo>(log: &Wal<D>, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut r = log.reader(from);
    let mut out = Vec::new();
    while let Some(rec) = r.next().await.expect("read") {
        out.push((rec.lsn, rec.data));
    }
    out
}

/// Appends, reads back, closes, reopens: the same records, and appends continue the LSNs.
async fn round_trip_and_reopen<D: DiskIo + Clone>(disk: D, dir: &Path, opts: WalOptions) {
    let (log, report) = Wal::open(disk.clone(), dir, opts.clone()).await.unwrap();
    assert_eq!((report.next_lsn, report.records), (1, 0));
    let mut expect = Vec::new();
    for i in 0..300u64 {
        let data = payload(i, (i as usize * 37) % 3000);
        let lsn = log.append(&data).await.unwrap();
        assert_eq!(lsn, i + 1, "LSNs are contiguous from 1");
        expect.push((lsn, data));
    }
    assert!(log.stats().rotations > 0, "64 KiB segments rotated");
    assert_eq!(read_all(&log, 1).await, expect);
    assert_eq!(read_all(&log, 150).await, expect[149..].to_vec());
    // The same through one reused vector.
    let mut reader = log.reader(1);
    let mut data = vec![0xEE; 5000];
    for (lsn, want) in &expect {
        assert_eq!(reader.next_into(&mut data).await.unwrap(), Some(*lsn));
        assert_eq!(&data, want);
    }
    assert_eq!(reader.next_into(&mut data).await.unwrap(), None);
    // The same in borrowed batches, from the start and from the middle, across segments.
    for from in [1u64, 150] {
        let mut reader = log.reader(from);
        let mut got = Vec::new();
        let mut batches = 0;
        while let Some(batch) = reader.next_batch().await.unwrap() {
            assert!(!batch.is_empty());
            batches += 1;
            got.extend(batch.iter().map(|(lsn, data)| (lsn, data.to_vec())));
        }
        assert_eq!(
            got,
            expect[from as usize - 1..].to_vec(),
            "batches from {from}"
        );
        assert!(batches < got.len(), "records came several to a batch");
    }
    log.close().await.unwrap();

    let (log, report) = Wal::open(disk, dir, opts.clone()).await.unwrap();
    assert_eq!(report.records, 300);
    assert_eq!(report.next_lsn, 301);
    assert!(report.cut.is_none(), "{report:?}");
    assert!(report.segments > 1);
    assert_eq!(read_all(&log, 1).await, expect);
    assert_eq!(log.append(b"after reopen").await.unwrap(), 301);
    log.close().await.unwrap();
}

/// 256 tasks append at once: every LSN is handed out once, the records read back in LSN order
/// with the right bytes, and appends shared groups.
async fn concurrent_appenders<D: DiskIo>(disk: D, dir: &Path, opts: WalOptions) {
    let (log, _) = Wal::open(disk, dir, opts.clone()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..256u64 {
        let log = log.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            for k in 0..8u64 {
                let data = payload(t * 1000 + k, 64 + (k as usize * 13));
                let lsn = log.append(&data).await.unwrap();
                mine.push((lsn, data));
            }
            mine
        });
    }
    let mut all = BTreeMap::new();
    while let Some(mine) = tasks.join_next().await {
        for (lsn, data) in mine.unwrap() {
            assert!(
                all.insert(lsn, data).is_none(),
                "LSN {lsn} handed out twice"
            );
        }
    }
    assert_eq!(all.len(), 2048);
    assert_eq!(*all.keys().next().unwrap(), 1);
    assert_eq!(*all.keys().last().unwrap(), 2048, "no gaps");
    let got = read_all(&log, 1).await;
    assert_eq!(got, all.into_iter().collect::<Vec<_>>());
    let stats = log.stats();
    assert!(
        stats.groups < stats.appends,
        "256 concurrent appenders shared groups: {stats:?}"
    );
    assert_eq!(stats.group_records.count, stats.groups, "{stats:?}");
    assert_eq!(stats.sync_us.count, stats.syncs, "{stats:?}");
    assert!(stats.syncs >= stats.groups, "every group synced: {stats:?}");
    assert!(
        stats.commit_us.p50 > 0.0 && stats.group_records.max > 1.0,
        "{stats:?}"
    );
    log.close().await.unwrap();
}

/// A reader keeps up with a writer: it sees a prefix of the records, in order, never one that is
/// not yet durable, and everything once the writer is done.
async fn reader_during_writes<D: DiskIo>(disk: D, dir: &Path, opts: WalOptions) {
    let (log, _) = Wal::open(disk, dir, opts.clone()).await.unwrap();
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..400u64 {
                log.append(&payload(i, 100)).await.unwrap();
            }
        })
    };
    let mut r = log.reader(1);
    let mut next = 1;
    while next <= 400 {
        match r.next().await.unwrap() {
            Some(rec) => {
                assert_eq!(rec.lsn, next);
                assert!(rec.lsn < log.durable_end(), "only durable records are seen");
                assert_eq!(rec.data, payload(next - 1, 100));
                next += 1;
            }
            None => tokio::task::yield_now().await,
        }
    }
    writer.await.unwrap();
    assert!(r.next().await.unwrap().is_none());
    log.close().await.unwrap();
}

/// Whole segments before an LSN go; readers of what went get `Truncated`; the rest stays and
/// survives a reopen.
async fn truncation<D: DiskIo + Clone>(disk: D, dir: &Path, opts: WalOptions) {
    let (log, _) = Wal::open(disk.clone(), dir, opts.clone()).await.unwrap();
    for i in 0..400u64 {
        log.append(&payload(i, 1000)).await.unwrap();
    }
    let before = disk.list_dir(dir).await.unwrap().len();
    let first = log.truncate_before(300).await.unwrap();
    assert!(first > 1 && first <= 300, "first LSN now {first}");
    assert!(disk.list_dir(dir).await.unwrap().len() < before);
    assert_eq!(log.first_lsn(), first);
    match log.reader(1).next().await {
        Err(WalError::Truncated { lsn: 1, first: f }) => assert_eq!(f, first),
        other => panic!("expected Truncated, got {other:?}"),
    }
    let rest = read_all(&log, first).await;
    assert_eq!(rest.len() as u64, 400 - first + 1);
    assert_eq!(
        log.truncate_before(first).await.unwrap(),
        first,
        "idempotent"
    );
    log.close().await.unwrap();
    let (log, report) = Wal::open(disk, dir, opts.clone()).await.unwrap();
    assert_eq!((report.first_lsn, report.next_lsn), (first, 401));
    assert_eq!(read_all(&log, first).await, rest);
    log.close().await.unwrap();
}

/// Records above `record_max` are refused without harm; empty records are records.
async fn sizes<D: DiskIo>(disk: D, dir: &Path, opts: WalOptions) {
    let (log, _) = Wal::open(disk, dir, opts.clone()).await.unwrap();
    assert_eq!(log.append(b"").await.unwrap(), 1);
    match log.append(&vec![0u8; (8 << 10) + 1]).await {
        Err(WalError::RecordTooLarge { len, max }) => assert_eq!((len, max), (8193, 8192)),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(log.append_batch(&[b"ok", &vec![0u8; 9000]]).await.is_err());
    assert_eq!(
        log.append(&vec![7u8; 8 << 10]).await.unwrap(),
        2,
        "nothing of the failed batch queued"
    );
    assert_eq!(log.append_batch(&[b"a", b"b", b"c"]).await.unwrap(), 5);
    let got = read_all(&log, 1).await;
    assert_eq!(got.len(), 5);
    assert!(got[0].1.is_empty());
    log.wait_durable(5).await.unwrap();
    assert!(matches!(
        log.wait_durable(6).await,
        Err(WalError::NotAppended { lsn: 6, next: 6 })
    ));
    log.close().await.unwrap();
}

/// Appends dropped at their first poll (a caller's timeout): the log stays healthy, and every
/// queued record is written once, in order.
async fn cancelled_appends<D: DiskIo + Clone>(disk: D, dir: &Path, opts: WalOptions) {
    let (log, _) = Wal::open(disk.clone(), dir, opts.clone()).await.unwrap();
    let mut dropped = 0;
    for i in 0..200u64 {
        let data = payload(i, 300);
        match tokio::time::timeout(std::time::Duration::ZERO, log.append(&data)).await {
            Ok(lsn) => assert_eq!(lsn.unwrap(), i + 1),
            Err(_) => dropped += 1,
        }
    }
    eprintln!("cancelled_appends: {dropped} of 200 appends dropped midway");
    assert_eq!(
        log.sync().await.unwrap(),
        200,
        "{dropped} appends were dropped midway"
    );
    let expect: Vec<_> = (0..200u64).map(|i| (i + 1, payload(i, 300))).collect();
    assert_eq!(read_all(&log, 1).await, expect);
    log.close().await.unwrap();
    let (log, report) = Wal::open(disk, dir, opts.clone()).await.unwrap();
    assert_eq!((report.next_lsn, report.cut), (201, None));
    log.close().await.unwrap();
}

/// Bad options are errors, not panics.
#[test]
fn bad_options_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for opts in [
            WalOptions::new().segment_bytes(1024),
            WalOptions::new().record_max(1 << 30),
            WalOptions::new().record_max(1 << 20).queued_bytes_max(100),
            WalOptions::new().group_bytes_max(0),
        ] {
            let r = Wal::open(CrashDisk::new(), "log", opts.clone()).await;
            assert!(matches!(r, Err(WalError::InvalidOptions(_))), "{opts:?}");
        }
    });
}

macro_rules! wal_suite {
    ($name:ident, $make:expr) => {
        wal_suite!($name, $make, false);
    };
    ($name:ident, $make:expr, $direct:expr) => {
        mod $name {
            use super::*;

            fn opts() -> WalOptions {
                small().direct_io($direct)
            }

            fn run<F, Fut>(label: &str, f: F)
            where
                F: FnOnce(PathBuf) -> Fut,
                Fut: std::future::Future<Output = ()>,
            {
                let scratch = ScratchDir::new(label);
                if $direct {
                    if let Some(reason) = conformance::harness::direct_io_refused(scratch.path()) {
                        conformance::harness::report_skip(label, &reason);
                        return;
                    }
                }
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(f(scratch.path().join("log")));
            }

            #[test]
            fn round_trip_and_reopen() {
                run("wal-rt", |dir| async move {
                    super::round_trip_and_reopen($make, &dir, opts()).await
                });
            }
            #[test]
            fn concurrent_appenders() {
                run("wal-conc", |dir| async move {
                    super::concurrent_appenders($make, &dir, opts()).await
                });
            }
            #[test]
            fn reader_during_writes() {
                run("wal-rd", |dir| async move {
                    super::reader_during_writes($make, &dir, opts()).await
                });
            }
            #[test]
            fn truncation() {
                run("wal-trunc", |dir| async move {
                    super::truncation($make, &dir, opts()).await
                });
            }
            #[test]
            fn cancelled_appends() {
                run("wal-cancel", |dir| async move {
                    super::cancelled_appends($make, &dir, opts()).await
                });
            }
            #[test]
            fn sizes() {
                run("wal-sizes", |dir| async move {
                    super::sizes($make, &dir, opts()).await
                });
            }
        }
    };
}

wal_suite!(
    blocking,
    Arc::new(diskio_blocking::BlockingDisk::with_defaults().unwrap()) as Arc<dyn diskio::DynDiskIo>
);
wal_suite!(raw, raw_or_blocking());
wal_suite!(uring, uring_or_blocking());
wal_suite!(
    blocking_direct,
    Arc::new(diskio_blocking::BlockingDisk::with_defaults().unwrap()) as Arc<dyn diskio::DynDiskIo>,
    true
);
wal_suite!(raw_direct, raw_or_blocking(), true);
wal_suite!(crash_disk_direct, CrashDisk::new(), true);

wal_suite!(crash_disk, CrashDisk::new());

/// The raw backend, or (visibly) the blocking one where io_uring is not allowed.
fn raw_or_blocking() -> Arc<dyn diskio::DynDiskIo> {
    match diskio_raw::RawDisk::with_defaults() {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("SKIPPED raw backend (io_uring unavailable: {e}); running on blocking");
            Arc::new(diskio_blocking::BlockingDisk::with_defaults().unwrap())
        }
    }
}

/// The tokio-uring backend, or (visibly) the blocking one where io_uring is not allowed.
fn uring_or_blocking() -> Arc<dyn diskio::DynDiskIo> {
    match diskio_uring::UringDisk::with_defaults() {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("SKIPPED uring backend (io_uring unavailable: {e}); running on blocking");
            Arc::new(diskio_blocking::BlockingDisk::with_defaults().unwrap())
        }
    }
}

// ---- Recovery: torn tails, damage, missing segments -------------------------------------------

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Payload bytes of the records of [`log_of`], and the bytes their frames take.
const REC: usize = 1000;
const FRAME: usize = 24 + REC;

/// Writes `n` records of [`REC`] bytes on a CrashDisk and closes the log.
async fn log_of(n: u64) -> (CrashDisk, PathBuf) {
    let disk = CrashDisk::new();
    let dir = PathBuf::from("log");
    let (log, _) = Wal::open(disk.clone(), &dir, small()).await.unwrap();
    for i in 0..n {
        log.append(&payload(i, REC)).await.unwrap();
    }
    log.close().await.unwrap();
    (disk, dir)
}

async fn segment_paths(disk: &CrashDisk, dir: &Path) -> Vec<PathBuf> {
    disk.list_dir(dir)
        .await
        .unwrap()
        .into_iter()
        .map(|n| dir.join(n))
        .collect()
}

/// The end of the written records in a segment image.
fn written_end(image: &[u8]) -> usize {
    image.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    block_on(async {
        let (disk, dir) = log_of(50).await;
        let segs = segment_paths(&disk, &dir).await;
        let last = segs.last().unwrap().clone();
        let end = written_end(&disk.file_image(&last).unwrap()) as u64;
        // Half a frame of a record that was never acknowledged.
        disk.damage(&last, end.div_ceil(8) * 8, &[0xAB; 11])
            .unwrap();
        let (log, report) = Wal::open(disk.clone(), &dir, small()).await.unwrap();
        let cut = report.cut.clone().expect("a cut");
        assert!(cut.torn_tail, "{cut:?}");
        assert_eq!((report.records, report.next_lsn), (50, 51));
        assert_eq!(log.append(b"next").await.unwrap(), 51);
        log.close().await.unwrap();
        let (log, report) = Wal::open(disk, &dir, small()).await.unwrap();
        assert!(report.cut.is_none(), "the cut was made durable: {report:?}");
        assert_eq!(read_all(&log, 51).await, vec![(51, b"next".to_vec())]);
        log.close().await.unwrap();
    });
}

#[test]
fn damage_before_the_tail_is_an_error_unless_asked_to_stop_there() {
    block_on(async {
        let (disk, dir) = log_of(200).await;
        let first = segment_paths(&disk, &dir).await[0].clone();
        // One bit of the 10th record's payload.
        let at = 4096 + 9 * FRAME + 20;
        let mut byte = disk.file_image(&first).unwrap()[at];
        byte ^= 0x10;
        disk.damage(&first, at as u64, &[byte]).unwrap();
        match Wal::open(disk.clone(), &dir, small()).await {
            Err(WalError::Corrupt { lsn, offset, .. }) => {
                assert_eq!(lsn, 10);
                assert_eq!(offset, 4096 + 9 * FRAME as u64);
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|(_, r)| r)),
        }
        let (log, report) = Wal::open(
            disk.clone(),
            &dir,
            small().recovery(RecoveryMode::StopAtDamage),
        )
        .await
        .unwrap();
        let cut = report.cut.clone().unwrap();
        assert!(!cut.torn_tail);
        assert_eq!((report.records, report.next_lsn), (9, 10));
        assert!(
            !report.removed.is_empty(),
            "later segments went: {report:?}"
        );
        assert_eq!(read_all(&log, 1).await.len(), 9);
        log.close().await.unwrap();
    });
}

#[test]
fn a_missing_middle_segment_is_detected() {
    block_on(async {
        let (disk, dir) = log_of(400).await;
        let segs = segment_paths(&disk, &dir).await;
        assert!(segs.len() >= 3);
        disk.remove_file(&segs[1]).await.unwrap();
        match Wal::open(disk, &dir, small()).await {
            Err(WalError::MissingSegment {
                expected, found, ..
            }) => assert!(found > expected),
            other => panic!("expected MissingSegment, got {:?}", other.map(|(_, r)| r)),
        }
    });
}

#[test]
fn a_stale_record_from_another_segment_never_verifies() {
    block_on(async {
        let (disk, dir) = log_of(400).await;
        let segs = segment_paths(&disk, &dir).await;
        let (a, b) = (segs[0].clone(), segs[1].clone());
        let img_a = disk.file_image(&a).unwrap();
        let img_b = disk.file_image(&b).unwrap();
        let end_b = written_end(&img_b);
        // Copy a valid frame of segment A (LSN 3) to the tail of segment B: right bytes, wrong
        // segment and place.
        let frame = &img_a[4096 + 2 * FRAME..4096 + 3 * FRAME];
        disk.damage(&b, end_b.div_ceil(8) as u64 * 8, frame)
            .unwrap();
        let (log, report) = Wal::open(disk, &dir, small()).await.unwrap();
        assert!(
            report.cut.is_none(),
            "a sealed segment is left as it is: {report:?}"
        );
        let all = read_all(&log, 1).await;
        assert_eq!(all.len(), 400, "exactly the records appended");
        for (i, (lsn, data)) in all.iter().enumerate() {
            assert_eq!(*lsn, i as u64 + 1);
            assert_eq!(*data, payload(i as u64, REC));
        }
        log.close().await.unwrap();
    })
}

// ---- Failures: poison --------------------------------------------------------------------------

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

// ---- Power loss while appending ----------------------------------------------------------------

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

// ---- Durability::None ----------------------------------------------------------------------------

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

#[test]
fn a_leftover_prepared_segment_is_removed_at_open() {
    block_on(async {
        let (disk, dir) = log_of(10).await;
        let stray = dir.join("prepared-7.wal.tmp");
        let f = disk
            .open(&stray, &diskio::OpenOptions::read_write_create())
            .await
            .unwrap();
        disk.close(f).await.unwrap();
        let (log, report) = Wal::open(disk.clone(), &dir, small()).await.unwrap();
        assert_eq!(report.removed, vec![stray.clone()]);
        assert_eq!(report.records, 10);
        log.close().await.unwrap();
        assert!(
            !disk
                .list_dir(&dir)
                .await
                .unwrap()
                .iter()
                .any(|n| n.ends_with(".tmp"))
        );
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

/// Every future of the log is `Send`, whatever the backend, so any task may be spawned with it
/// (a compile-time check: this function is never called).
#[allow(dead_code)]
fn futures_are_send(
    a: &Wal<diskio_blocking::BlockingDisk>,
    b: &Wal<diskio_raw::RawDisk>,
    c: &Wal<Arc<dyn diskio::DynDiskIo>>,
    d: &Wal<CrashDisk>,
) {
    fn send<T: Send>(_: T) {}
    send(a.append(b""));
    send(b.append(b""));
    send(c.append(b""));
    send(d.append(b""));
    send(a.append_batch(&[]));
    send(b.sync());
    send(c.truncate_before(1));
    send(d.wait_durable(1));
    let mut r = c.reader(1);
    send(r.next());
    send(Wal::open(CrashDisk::new(), "x", WalOptions::new()));
    send(a.clone().close());
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

// ---- Partitions ----------------------------------------------------------------------------------

#[test]
fn partitions_route_by_key_and_keep_their_count() {
    block_on(async {
        let disk = CrashDisk::new();
        let (log, reports) = wal::Partitioned::open("plog", 4, small(), |_| disk.clone())
            .await
            .unwrap();
        assert_eq!((log.len(), reports.len()), (4, 4));
        let mut per_key: BTreeMap<u64, (usize, Vec<u64>)> = BTreeMap::new();
        for i in 0..400u64 {
            let key = (i % 37).to_le_bytes();
            let (p, lsn) = log.append(&key, &payload(i, 50)).await.unwrap();
            assert_eq!(p, log.partition_of(&key));
            let e = per_key.entry(i % 37).or_insert((p, Vec::new()));
            assert_eq!(e.0, p, "a key stays in one partition");
            e.1.push(lsn);
        }
        for (_, lsns) in per_key.values() {
            assert!(
                lsns.windows(2).all(|w| w[0] < w[1]),
                "a key's records in order"
            );
        }
        let mut total = 0;
        for i in 0..log.len() {
            let part = log.partition(i).unwrap();
            let got = read_all(part, 1).await;
            for (k, (lsn, _)) in got.iter().enumerate() {
                assert_eq!(*lsn, k as u64 + 1, "partition {i}: contiguous LSNs");
            }
            total += got.len();
        }
        assert_eq!(total, 400);
        assert!(
            (0..4).all(|i| per_key.values().any(|(p, _)| *p == i)),
            "37 keys use every partition"
        );
        log.close().await.unwrap();

        let (log, reports) = wal::Partitioned::open("plog", 4, small(), |_| disk.clone())
            .await
            .unwrap();
        assert_eq!(reports.iter().map(|r| r.records).sum::<u64>(), 400);
        log.close().await.unwrap();
        match wal::Partitioned::open("plog", 3, small(), |_| disk.clone()).await {
            Err(WalError::InvalidOptions(m)) => assert!(m.contains("4 partitions"), "{m}"),
            other => panic!("expected a refusal, got {:?}", other.map(|(l, _)| l)),
        }
        assert!(matches!(
            wal::Partitioned::open("other", 0, small(), |_| disk.clone()).await,
            Err(WalError::InvalidOptions(_))
        ));
    });
}

/// A sector lost in the middle of the last group (a write that never completed) is a torn tail,
/// even with valid records of that group after the hole; the same loss in a group with a later
/// group after it is corruption (the later group proves the damaged one had been synced).
#[test]
fn a_hole_in_the_last_group_is_torn_but_in_an_earlier_group_is_corrupt() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for groups in [1usize, 2] {
            let disk = CrashDisk::new();
            let dir = PathBuf::from("log");
            let (log, _) = Wal::open(disk.clone(), &dir, small()).await.unwrap();
            let records: Vec<Vec<u8>> = (0..40u64).map(|i| payload(i, 200)).collect();
            let refs: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
            for _ in 0..groups {
                // On a current-thread runtime the whole batch is queued before the committer
                // runs: one group.
                log.append_batch(&refs).await.unwrap();
            }
            let stats = log.stats();
            assert_eq!(stats.groups, groups as u64, "{stats:?}");
            log.close().await.unwrap();
            let seg = dir.join("00000000000000000001.wal");
            // Zero the sector holding the middle of the first group.
            let hole = 4096 + 20 * (24 + 200) / 512 * 512;
            disk.damage(&seg, hole as u64, &[0u8; 512]).unwrap();
            let opened = Wal::open(disk.clone(), &dir, small()).await;
            if groups == 1 {
                let (log, report) = opened.unwrap();
                let cut = report.cut.clone().expect("cut");
                assert!(cut.torn_tail, "{cut:?}");
                assert!(report.next_lsn < 40 && report.next_lsn > 1, "{report:?}");
                log.close().await.unwrap();
            } else {
                assert!(
                    matches!(opened, Err(WalError::Corrupt { .. })),
                    "{:?}",
                    opened.map(|(_, r)| r)
                );
            }
        }
    });
}

/// With `direct_io`, a reader of fresh records takes them from the log's memory, not the
/// device: past the segment header it reads nothing from the file, where a buffered log reads
/// its records from the file. Both read back the same records.
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
        // One read is the segment header; a buffered log reads its records too.
        assert_eq!(
            reads[1], 1,
            "direct_io: only the header comes from the file"
        );
        assert!(
            reads[0] > 1,
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
        let (log, _) = Wal::open(
            Arc::clone(&disk) as Arc<dyn diskio::DynDiskIo>,
            "log",
            small(),
        )
        .await
        .unwrap();
        assert!(!log.is_direct_io(), "the refusal was noticed");
        for i in 0..50u64 {
            log.append(&payload(i, 300)).await.unwrap();
        }
        assert_eq!(read_all(&log, 1).await.len(), 50);
        log.close().await.unwrap();
        let (log, report) = Wal::open(
            Arc::clone(&disk) as Arc<dyn diskio::DynDiskIo>,
            "log",
            small(),
        )
        .await
        .unwrap();
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

/// A record damaged after the log was opened (media damage) is reported by `next_batch` as
/// corrupt, at its LSN, after the intact records before it: a batch never carries it.
#[test]
fn next_batch_reports_a_damaged_record_after_the_good_ones() {
    block_on(async {
        let (disk, dir) = log_of(20).await;
        let (log, _) = Wal::open(disk.clone(), &dir, small()).await.unwrap();
        let first = segment_paths(&disk, &dir).await.remove(0);
        // Record 11's payload (the header block, then ten whole frames before it).
        disk.damage(&first, (4096 + 10 * FRAME + 24 + 5) as u64, &[0xFF])
            .unwrap();
        let mut reader = log.reader(1);
        let mut got = Vec::new();
        let err = loop {
            match reader.next_batch().await {
                Ok(Some(batch)) => got.extend(batch.iter().map(|(lsn, d)| (lsn, d.to_vec()))),
                Ok(None) => panic!("the damage went unnoticed"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, WalError::Corrupt { lsn: 11, .. }), "{err}");
        let want: Vec<_> = (0..10u64).map(|i| (i + 1, payload(i, REC))).collect();
        assert_eq!(got, want, "the records before the damage, intact");
    });
}
