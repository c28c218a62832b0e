//! Recovery: torn tails are cut, damage before them is an error, missing segments and stale
//! records are found, leftovers of an interrupted rotation go.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use common::{block_on, payload, read_all, small};

use std::path::{Path, PathBuf};

use conformance::CrashDisk;
use diskio::DiskIo;
use wal::{RecoveryMode, Wal, WalError};

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

/// A segment of format version 1 (one CRC per field, four per frame) is refused by name, and
/// left as it is.
#[test]
fn a_version_1_segment_is_a_clear_error() {
    block_on(async {
        let (disk, dir) = log_of(20).await;
        let first = segment_paths(&disk, &dir).await[0].clone();
        let mut header = disk.file_image(&first).unwrap()[..36].to_vec();
        header[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&header[0..32]);
        header[32..36].copy_from_slice(&crc.to_le_bytes());
        disk.damage(&first, 0, &header).unwrap();
        let before = disk.file_image(&first).unwrap();
        match Wal::open(disk.clone(), &dir, small()).await {
            Err(e @ WalError::BadHeader { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("format version 1; this build reads version 2"),
                    "{text}"
                );
            }
            other => panic!("expected BadHeader, got {:?}", other.map(|(_, r)| r)),
        }
        assert_eq!(
            disk.file_image(&first).unwrap(),
            before,
            "the segment is untouched"
        );
    });
}
