//! Readers that start inside a segment: from any LSN they return that record first, through
//! the sparse index the committer extends, the one recovery rebuilds at open, and after a
//! truncation cut the index back; in both write modes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use wal::{Wal, WalOptions};

fn payload(lsn: u64) -> Vec<u8> {
    common::payload(lsn, 50 + (lsn as usize * 131) % 700)
}

async fn check_from<D: diskio::DiskIo>(log: &Wal<D>, from: u64, next: u64, what: &str) {
    let mut r = log.reader(from);
    for lsn in from..(from + 4).min(next) {
        let rec = r
            .next()
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: nothing at {lsn}"));
        assert_eq!(rec.lsn, lsn, "{what}");
        assert!(rec.data == payload(lsn), "{what}: record {lsn} differs");
    }
}

#[test]
fn a_reader_starting_anywhere_gets_that_record_first() {
    for direct in [false, true] {
        common::block_on(async move {
            let dir = conformance::harness::ScratchDir::new("seek");
            let disk = diskio_blocking::BlockingDisk::with_defaults().unwrap();
            // 1 MiB segments of ~400-byte records: several segments, each with index entries.
            let opts = WalOptions::new()
                .segment_bytes(1 << 20)
                .record_max(4 << 10)
                .direct_io(direct);
            let (log, _) = Wal::open(disk.clone(), dir.path(), opts.clone())
                .await
                .unwrap();
            let n = 8_000u64;
            for chunk in (1..=n).collect::<Vec<_>>().chunks(100) {
                let recs: Vec<Vec<u8>> = chunk.iter().map(|&l| payload(l)).collect();
                let refs: Vec<&[u8]> = recs.iter().map(|r| &r[..]).collect();
                log.append_batch(&refs).await.unwrap();
            }
            let next = n + 1;
            let probes: Vec<u64> = (1..=n).step_by(97).chain([1, 2, n - 1, n]).collect();
            for &from in &probes {
                check_from(&log, from, next, &format!("written, direct {direct}")).await;
            }
            log.close().await.unwrap();
            let (log, _) = Wal::open(disk, dir.path(), opts).await.unwrap();
            for &from in &probes {
                check_from(&log, from, next, &format!("reopened, direct {direct}")).await;
            }
            // A truncation inside an indexed stretch, then new records past it.
            log.truncate_from(5_000).await.unwrap();
            for l in 5_000..5_600 {
                log.append(&payload(l)).await.unwrap();
            }
            for from in (4_900..5_600).step_by(7) {
                check_from(
                    &log,
                    from,
                    5_600,
                    &format!("after a truncation, direct {direct}"),
                )
                .await;
            }
            log.close().await.unwrap();
        });
    }
}
