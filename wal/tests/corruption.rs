//! The corruption scan: one bit flipped, and separately one 512-byte sector zeroed, at sampled
//! places of a valid, closed log. Damage to any byte a checksum covers is detected every time:
//! before the last group it is an error (never cut away in silence), in the last group it is an
//! error or a reported cut. Damage elsewhere (padding, unused header bytes, the zeros after the
//! records) may go unnoticed, but never changes what is read back.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::path::{Path, PathBuf};

use conformance::{CrashDisk, Rng};
use diskio::DiskIo;
use wal::format::{FRAME_HEADER_LEN, Frame, HEADER_LEN, SegmentHeader, decode_frame};
use wal::{Wal, WalError};

use common::opts;

/// The record with LSN `lsn`: 20 to 319 bytes.
fn payload(lsn: u64) -> Vec<u8> {
    common::payload(lsn ^ 0xC0FFEE, 20 + (lsn as usize * 67) % 300)
}

/// What a byte of a segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Byte {
    /// Covered by a checksum: a segment header's (group 0) or a record's, with its group.
    Covered { group: u64 },
    /// Not covered, and not read as data (padding, unused header bytes, trailing zeros).
    Free,
}

/// A record frame's place: segment index, covered byte range, group.
#[derive(Debug, Clone, Copy)]
struct Place {
    seg: usize,
    start: usize,
    end: usize,
    group: u64,
}

/// A closed log of `records` records in groups of 1..=4, and the map of its segments' bytes.
#[allow(clippy::type_complexity)]
async fn valid_log(
    records: u64,
    rng: &mut Rng,
) -> (CrashDisk, Vec<(PathBuf, Vec<Byte>)>, Vec<Place>) {
    let disk = CrashDisk::new();
    let (log, _) = Wal::open(disk.clone(), Path::new("log"), opts())
        .await
        .unwrap();
    let mut next = 1;
    while next <= records {
        let n = (1 + rng.below(4)).min(records - next + 1);
        let batch: Vec<Vec<u8>> = (next..next + n).map(payload).collect();
        let refs: Vec<&[u8]> = batch.iter().map(|r| &r[..]).collect();
        log.append_batch(&refs).await.unwrap();
        next += n;
    }
    log.close().await.unwrap();
    let mut map = Vec::new();
    let names = disk.list_dir(Path::new("log")).await.unwrap();
    let mut frames = Vec::new();
    for name in &names {
        let path = Path::new("log").join(name);
        let image = disk.file_image(&path).unwrap();
        let header = SegmentHeader::decode(&image).unwrap();
        let mut bytes = vec![Byte::Free; image.len()];
        for b in bytes.iter_mut().take(36) {
            *b = Byte::Covered { group: 0 };
        }
        let mut at = HEADER_LEN;
        let mut lsn = header.first_lsn;
        while let Frame::Record {
            payload,
            frame_len,
            group,
        } = decode_frame(&image[at..], lsn, header.salt, 4 << 10)
        {
            frames.push(Place {
                seg: map.len(),
                start: at,
                end: at + FRAME_HEADER_LEN + payload.len(),
                group,
            });
            at += frame_len;
            lsn += 1;
        }
        map.push((path, bytes));
    }
    for f in &frames {
        for b in &mut map[f.seg].1[f.start..f.end] {
            *b = Byte::Covered { group: f.group };
        }
    }
    (disk, map, frames)
}

#[derive(Debug, Default)]
struct Tally {
    covered: u64,
    detected: u64,
    free: u64,
}

/// Whether an intact record of a group later than `group` survives outside the damaged range.
fn later_group_survives(frames: &[Place], group: u64, seg: usize, damaged: (usize, usize)) -> bool {
    frames
        .iter()
        .any(|f| f.group > group && !(f.seg == seg && f.start < damaged.1 && damaged.0 < f.end))
}

/// Opens the damaged log and checks the outcome: damage to checksummed bytes must be an error,
/// or a reported cut when nothing of a later group survived it.
async fn judge(
    disk: CrashDisk,
    kind: Byte,
    cut_allowed: bool,
    records: u64,
    what: &str,
    tally: &mut Tally,
) {
    let opened = Wal::open(disk, Path::new("log"), opts()).await;
    let outcome = match opened {
        Err(
            WalError::Corrupt { .. } | WalError::BadHeader { .. } | WalError::MissingSegment { .. },
        ) => "error",
        Err(e) => panic!("{what}: unexpected error {e}"),
        Ok((log, report)) => {
            // Whatever opens must read back only intact records, contiguously.
            let lsn = common::check_contiguous(&log, 1, payload, what).await;
            if report.cut.is_some() {
                "cut"
            } else {
                assert_eq!(lsn, records, "{what}: records lost without a report");
                "unnoticed"
            }
        }
    };
    match kind {
        Byte::Covered { .. } => {
            tally.covered += 1;
            let ok = outcome == "error" || (cut_allowed && outcome == "cut");
            assert!(ok, "{what}: damage to checksummed bytes was {outcome}");
            tally.detected += 1;
        }
        Byte::Free => tally.free += 1,
    }
}

#[test]
fn every_damage_to_checksummed_bytes_is_detected() {
    let seed = conformance::seed_from_env("DISKIO_SEED");
    eprintln!("corruption scan: DISKIO_SEED={seed}");
    let mut rng = Rng::new(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let records = 600;
        let (disk, map, frames) = valid_log(records, &mut rng).await;
        let (mut flips, mut sectors) = (Tally::default(), Tally::default());
        for sample in 0..400 {
            let seg = rng.below(map.len() as u64) as usize;
            let (path, bytes) = &map[seg];
            let written = bytes.len().min(
                disk.file_image(path)
                    .unwrap()
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |p| p + 4096),
            );
            let at = rng.below(written as u64) as usize;
            // A bit flip.
            let copy = disk.crash_with(0, conformance::CrashMode::KeepAll);
            let old = copy.file_image(path).unwrap()[at];
            let what = format!(
                "sample {sample}: bit flip at {} offset {at}",
                path.display()
            );
            copy.damage(path, at as u64, &[old ^ (1 << rng.below(8))])
                .unwrap();
            let cut_allowed = match bytes[at] {
                Byte::Covered { group } => !later_group_survives(&frames, group, seg, (at, at + 1)),
                Byte::Free => true,
            };
            judge(copy, bytes[at], cut_allowed, records, &what, &mut flips).await;
            // A zeroed sector.
            let sector = at / 512 * 512;
            let end = (sector + 512).min(bytes.len());
            // The earliest group the zeroed sector touches decides.
            let kind = bytes[sector..end]
                .iter()
                .copied()
                .filter_map(|b| match b {
                    Byte::Covered { group } => Some(group),
                    Byte::Free => None,
                })
                .min()
                .map_or(Byte::Free, |group| Byte::Covered { group });
            let cut_allowed = match kind {
                Byte::Covered { group } => {
                    !later_group_survives(&frames, group, seg, (sector, end))
                }
                Byte::Free => true,
            };
            let image = disk.file_image(path).unwrap();
            if image[sector..end].iter().all(|&b| b == 0) {
                continue; // zeroing zeros changes nothing
            }
            let copy = disk.crash_with(0, conformance::CrashMode::KeepAll);
            let what = format!(
                "sample {sample}: sector {sector} of {} zeroed",
                path.display()
            );
            copy.damage(path, sector as u64, &vec![0u8; end - sector])
                .unwrap();
            judge(copy, kind, cut_allowed, records, &what, &mut sectors).await;
        }
        eprintln!(
            "corruption scan: bit flips in checksummed bytes {}/{} detected ({} elsewhere, \
             harmless); zeroed sectors with checksummed bytes {}/{} detected ({} elsewhere)",
            flips.detected,
            flips.covered,
            flips.free,
            sectors.detected,
            sectors.covered,
            sectors.free
        );
        assert!(
            flips.covered > 100 && sectors.covered > 100,
            "{flips:?} {sectors:?}"
        );
    });
}
