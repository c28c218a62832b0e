//! The WAL suite, run on every backend available here and on the fault-injecting disks.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use conformance::CrashDisk;
use conformance::harness::ScratchDir;
use diskio::DiskIo;
use wal::{Wal, WalError, WalOptions};

mod common;

use common::{block_on, opts, payload, raw_or_blocking, read_all, small, uring_or_blocking};

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

/// A durable append that finds the log idle commits inside its own future. Dropped after its
/// first poll, while its group is on the disk, the commit goes on in a spawned task: the record
/// becomes durable, and the next appends (and a sync) are not left waiting for a committer that
/// was dropped.
#[test]
fn an_append_dropped_while_it_commits_loses_nothing() {
    let scratch = ScratchDir::new("wal-led-drop");
    block_on(async {
        // Syncs on the pool's threads, never on this one: the first poll must leave the
        // commit on the disk, not finish it.
        let options = diskio_blocking::BlockingOptions::new().lone_sync_here(false);
        let disk = diskio_blocking::BlockingDisk::new(options).unwrap();
        let dir = scratch.path().join("log");
        let (log, _) = Wal::open(disk.clone(), &dir, opts()).await.unwrap();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let (mut dropped, mut appended) = (0, 0u64);
        for i in 0..20u64 {
            let data = payload(i, 100);
            let mut append = Box::pin(log.append(&data));
            // The blocking backend answers from another thread, after the write and its
            // fdatasync: the first poll, which starts the commit here, cannot see it done.
            match append.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(lsn) => assert_eq!(lsn.unwrap(), appended + 1),
                std::task::Poll::Pending => dropped += 1,
            }
            drop(append);
            appended += 1;
            // The next append queues behind the detached commit, or leads a new one.
            assert_eq!(log.append(&payload(i, 7)).await.unwrap(), appended + 1);
            appended += 1;
        }
        assert!(dropped > 0, "no append was dropped mid-commit");
        assert_eq!(log.sync().await.unwrap(), appended);
        let got = read_all(&log, 1).await;
        let want: Vec<_> = (0..20u64)
            .flat_map(|i| [payload(i, 100), payload(i, 7)])
            .enumerate()
            .map(|(k, d)| (k as u64 + 1, d))
            .collect();
        assert_eq!(got, want, "{dropped} of 20 appends dropped mid-commit");
        log.close().await.unwrap();
        let (log, report) = Wal::open(disk, &dir, opts()).await.unwrap();
        assert_eq!((report.next_lsn, report.cut), (41, None));
        log.close().await.unwrap();
    });
}
