//! Replays long enough for the reader to read its next 1 MiB window ahead while it verifies
//! the current one: every record comes back once, in order and intact; damage inside a window
//! read ahead is still reported at its LSN; a reader that follows appends never hands out a
//! record from a window read before that record was complete.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conformance::CrashDisk;
use conformance::harness::ScratchDir;
use diskio::{DiskIo, DynDiskIo};
use wal::{Durability, Wal, WalError, WalOptions};

use common::{block_on, payload};

/// Payload bytes of the fixed-size records, and the bytes their frames take.
const REC: usize = 1000;
const FRAME: usize = 24 + REC;
/// The segment header block.
const HEADER: usize = 4096;

/// 16 MiB segments: one holds the whole replay, so its windows grow to 1 MiB and the reader
/// reads ahead.
fn long() -> WalOptions {
    WalOptions::new()
        .segment_bytes(16 << 20)
        .record_max(8 << 10)
}

/// Every record from `from` on through `next_batch`, and how many batches that took.
async fn replay_batches<D: DiskIo>(log: &Wal<D>, from: u64) -> (Vec<(u64, Vec<u8>)>, usize) {
    let mut reader = log.reader(from);
    let mut got = Vec::new();
    let mut batches = 0;
    while let Some(batch) = reader.next_batch().await.unwrap() {
        batches += 1;
        got.extend(batch.iter().map(|(lsn, d)| (lsn, d.to_vec())));
    }
    (got, batches)
}

#[test]
fn a_long_replay_returns_every_record_once_in_order() {
    block_on(async {
        let disk = CrashDisk::new();
        let dir = PathBuf::from("log");
        let (log, _) = Wal::open(disk.clone(), &dir, long()).await.unwrap();
        // Sizes that do not divide a window, so frames straddle every window boundary.
        let expect: Vec<(u64, Vec<u8>)> = (0..9000u64)
            .map(|i| (i + 1, payload(i, 1 + (i as usize * 389) % 1700)))
            .collect();
        for chunk in expect.chunks(500) {
            let records: Vec<&[u8]> = chunk.iter().map(|(_, d)| &d[..]).collect();
            log.append_batch(&records).await.unwrap();
        }
        for from in [1u64, 4321] {
            let (got, batches) = replay_batches(&log, from).await;
            assert_eq!(got.len(), expect.len() - from as usize + 1, "from {from}");
            assert!(got == expect[from as usize - 1..], "records from {from}");
            assert!(
                batches < 200,
                "{batches} batches: records came a window at a time"
            );
        }
        // A reader dropped with a window in flight: nothing hangs, the log closes.
        let mut reader = log.reader(1);
        for _ in 0..6 {
            reader.next_batch().await.unwrap().unwrap();
        }
        drop(reader);
        log.close().await.unwrap();
    });
}

/// Reads every record through `next_batch` until an error, checking each record on the way;
/// returns the error and how many records came before it.
async fn replay_until_error<D: DiskIo>(log: &Wal<D>) -> (WalError, u64) {
    let mut reader = log.reader(1);
    let mut got = 0u64;
    loop {
        match reader.next_batch().await {
            Ok(Some(batch)) => {
                for (lsn, d) in batch.iter() {
                    got += 1;
                    assert_eq!(lsn, got);
                    assert!(d == payload(lsn - 1, REC), "record {lsn}");
                }
            }
            Ok(None) => panic!("the damage went unnoticed"),
            Err(e) => return (e, got),
        }
    }
}

/// A replay of `log` reports the damaged record as corrupt at its LSN, after every record
/// before it, intact.
async fn expect_damage_reported<D: DiskIo>(log: Wal<D>) {
    let (err, got) = replay_until_error(&log).await;
    assert!(
        matches!(err, WalError::Corrupt { lsn, .. } if lsn == DAMAGED + 1),
        "{err}"
    );
    assert_eq!(got, DAMAGED, "every record before the damage");
    log.close().await.unwrap();
}

/// 0-based index of the damaged record: LSN 3501, about 3.4 MiB into the segment.
const DAMAGED: u64 = 3500;

/// Where in the segment file a byte of the damaged record's payload lies.
fn damage_offset() -> u64 {
    (HEADER + DAMAGED as usize * FRAME + 24 + 17) as u64
}

async fn fill_for_damage<D: DiskIo>(log: &Wal<D>) {
    for i in 0..6000u64 {
        log.append_nowait(&payload(i, REC)).await.unwrap();
    }
    log.sync().await.unwrap();
}

/// Damage inside the fourth MiB of a segment (a window the reader reads ahead on a backend
/// that reads on another thread) is reported after the intact records before it, at the
/// damaged record's LSN: on the crash disk, and on the blocking backend with a real file.
#[test]
fn damage_in_a_window_read_ahead_is_reported_at_its_lsn() {
    block_on(async {
        let disk = CrashDisk::new();
        let dir = PathBuf::from("log");
        let (log, _) = Wal::open(disk.clone(), &dir, long()).await.unwrap();
        fill_for_damage(&log).await;
        let segment = dir.join(DiskIo::list_dir(&disk, &dir).await.unwrap().remove(0));
        disk.damage(&segment, damage_offset(), &[0xFF]).unwrap();
        expect_damage_reported(log).await;
    });
    let scratch = ScratchDir::new("wal-read-ahead-damage");
    let dir = scratch.path().join("log");
    block_on(async {
        let disk = diskio_blocking::BlockingDisk::with_defaults().unwrap();
        let (log, _) = Wal::open(disk, &dir, long().direct_io(false))
            .await
            .unwrap();
        fill_for_damage(&log).await;
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let segment = std::fs::OpenOptions::new()
            .write(true)
            .open(&names[0])
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&segment, &[0xFF], damage_offset()).unwrap();
        expect_damage_reported(log).await;
    });
}

/// A reader follows 3 MiB of appends on a real backend (unsynced, so it sees records as soon as
/// they are written): it reads ahead into the tail while the writer is still filling it, and
/// must never hand out a record from a window read before that record was complete.
async fn follow_while_appending(disk: Arc<dyn DynDiskIo>, dir: &Path, direct: bool) {
    let opts = long().durability(Durability::None).direct_io(direct);
    let (log, _) = Wal::open(disk, dir, opts).await.unwrap();
    let total = 3000u64;
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..total {
                log.append_nowait(&payload(i, REC)).await.unwrap();
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            log.sync().await.unwrap();
        })
    };
    let mut reader = log.reader(1);
    let mut next = 1u64;
    while next <= total {
        match reader.next_batch().await.unwrap() {
            Some(batch) => {
                for (lsn, d) in batch.iter() {
                    assert_eq!(lsn, next);
                    assert!(d == payload(lsn - 1, REC), "record {lsn} (direct {direct})");
                    next += 1;
                }
            }
            None => reader.wait().await.unwrap(),
        }
    }
    writer.await.unwrap();
    assert!(reader.next_batch().await.unwrap().is_none());
    drop(reader);
    log.close().await.unwrap();
}

#[test]
fn a_reader_following_appends_sees_only_complete_records() {
    for backend in ["blocking", "raw", "uring"] {
        let Some(disk) = common::backend(backend) else {
            continue;
        };
        for direct in [false, true] {
            let scratch = ScratchDir::new("wal-read-ahead");
            block_on(follow_while_appending(
                Arc::clone(&disk),
                &scratch.path().join("log"),
                direct,
            ));
        }
    }
}
