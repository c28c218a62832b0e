//! Opening a log directory: scan every segment, verify every record, cut a torn tail, and report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskio::{AlignedBuf, DiskIo, FileId, OpenOptions, SyncKind};

use crate::Lsn;
use crate::error::{Damage, HeaderFault, Result, WalError};
use crate::format::{
    FRAME_HEADER_LEN, Frame, HEADER_LEN, Salt, SegmentHeader, TEMP_SUFFIX, cut_name, decode_frame,
    parse_cut_name, parse_segment_name, parse_skip_name, segment_name, skip_name,
};
use crate::options::{RecoveryMode, WalOptions};
use crate::state::{SegmentRef, SparseIndex};

/// What recovery found, kept and cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Valid records found (and kept).
    pub records: u64,
    /// The first LSN in the log (the next LSN if the log is empty).
    pub first_lsn: Lsn,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// The damage that was cut, if any.
    pub cut: Option<Cut>,
    /// Files removed: segments after a cut, a segment whose creation was interrupted, leftover
    /// temporary files.
    pub removed: Vec<PathBuf>,
}

/// Why and where recovery cut the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment cut.
    pub segment: PathBuf,
    /// Offset of the first byte removed (zeroed).
    pub offset: u64,
    /// The LSN that was expected there (the next append gets it).
    pub lsn: Lsn,
    /// What was found there.
    pub damage: Damage,
    /// `true` for a torn tail (nothing valid after the damage); `false` for damage with valid
    /// records after it, cut because of [`RecoveryMode::StopAtDamage`].
    pub torn_tail: bool,
}

/// A segment of the recovered log.
#[derive(Debug, Clone)]
pub(crate) struct FoundSegment {
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
    /// Built while its records are verified.
    pub(crate) index: Arc<SparseIndex>,
}

/// The recovered log, ready to append to.
pub(crate) struct Recovered {
    /// Sealed segments, oldest first (every one but the last).
    pub(crate) sealed: Vec<SegmentRef>,
    /// The last segment, opened for writing, and where its next record goes.
    pub(crate) active: Option<ActiveFound>,
    pub(crate) report: RecoveryReport,
}

pub(crate) struct ActiveFound {
    pub(crate) segment: FoundSegment,
    pub(crate) file: FileId,
    pub(crate) salt: Salt,
    pub(crate) offset: u64,
}

/// Scans `dir` and returns the log as found, after cutting what must be cut.
pub(crate) async fn recover<D: DiskIo>(
    disk: &D,
    dir: &Path,
    opts: &WalOptions,
) -> Result<Recovered> {
    // A log whose directory's creation is not durable could vanish whole in a power cut.
    diskio::create_dir_all_durable(disk, dir).await?;
    let mut report = RecoveryReport::default();
    let mut segs = Vec::new();
    let mut skips = Vec::new();
    let mut cuts = Vec::new();
    for name in disk.list_dir(dir).await? {
        if let Some(lsn) = parse_skip_name(&name) {
            skips.push(lsn);
        } else if let Some(lsn) = parse_cut_name(&name) {
            cuts.push(lsn);
        } else if name.ends_with(TEMP_SUFFIX) {
            let path = dir.join(&name);
            disk.remove_file(&path).await?;
            report.removed.push(path);
        } else if let Some(first_lsn) = parse_segment_name(&name) {
            segs.push(FoundSegment {
                first_lsn,
                path: dir.join(name),
                index: Arc::default(),
            });
        }
    }
    segs.sort_by_key(|s| s.first_lsn);
    finish_skip(disk, dir, &mut segs, skips, &mut report).await?;
    // A truncation that a crash interrupted drops everything from its LSN on (only one runs at
    // a time; the lowest LSN is the one that covers them all).
    let cut_at = cuts.iter().min().copied();
    let mut sealed: Vec<SegmentRef> = Vec::new();
    let mut active = None;
    let mut expected = segs.first().map_or(1, |s| s.first_lsn);
    report.first_lsn = expected;
    let mut i = 0;
    while i < segs.len() {
        let seg = segs[i].clone();
        let last = i + 1 == segs.len();
        let file = disk
            .open(&seg.path, &OpenOptions::new().read(true).write(true))
            .await?;
        let image = read_whole(disk, file).await?;
        let header = match SegmentHeader::decode(&image) {
            Ok(h) if h.first_lsn == seg.first_lsn => h,
            Ok(h) => {
                disk.close(file).await?;
                return Err(WalError::BadHeader {
                    segment: seg.path,
                    fault: HeaderFault::NameMismatch {
                        header: h.first_lsn,
                        name: seg.first_lsn,
                    },
                });
            }
            Err(e) => {
                disk.close(file).await?;
                // A last segment whose creation was interrupted holds nothing but zeros after
                // its header block: no record can have been written (or acknowledged) in it.
                if last && image.iter().skip(HEADER_LEN).all(|&b| b == 0) {
                    disk.remove_file(&seg.path).await?;
                    disk.sync_dir(dir).await?;
                    report.removed.push(seg.path);
                    break;
                }
                return Err(WalError::BadHeader {
                    segment: seg.path,
                    fault: e,
                });
            }
        };
        if i > 0 && seg.first_lsn != expected {
            disk.close(file).await?;
            if seg.first_lsn > expected {
                return Err(WalError::MissingSegment {
                    segment: seg.path,
                    expected,
                    found: seg.first_lsn,
                });
            }
            return Err(WalError::BadHeader {
                segment: seg.path,
                fault: HeaderFault::Overlap {
                    first: seg.first_lsn,
                    expected,
                },
            });
        }
        let mut at = HEADER_LEN;
        let mut finishing = false;
        let damage = loop {
            if cut_at == Some(expected) {
                finishing = true;
                break None;
            }
            match decode_frame(&image[at..], expected, header.salt, opts.record_max) {
                Frame::Record { frame_len, .. } => {
                    note_stride(&seg.index, expected, at);
                    report.records += 1;
                    expected += 1;
                    at += frame_len;
                }
                Frame::End => break None,
                Frame::Invalid(damage) => break Some(damage),
            }
        };
        if finishing {
            zero_from(disk, file, &image, at).await?;
            for later in segs[i + 1..].iter().rev() {
                disk.remove_file(&later.path).await?;
                report.removed.push(later.path.clone());
            }
            if i + 1 < segs.len() {
                disk.sync_dir(dir).await?;
            }
            active = Some(ActiveFound {
                segment: seg,
                file,
                salt: header.salt,
                offset: at as u64,
            });
            break;
        }
        let dirty_tail = image[at..].iter().any(|&b| b != 0);
        if let Some(next) = segs.get(i + 1) {
            // A sealed segment: it was synced before the next one got any record, so its end is
            // final. Bytes after its last record are harmless if the next segment starts right
            // there (records are checked by LSN and salt, never by position alone).
            if next.first_lsn == expected {
                disk.close(file).await?;
                sealed.push(SegmentRef::found(seg, header.salt));
                i += 1;
                continue;
            }
            if damage.is_none() && !dirty_tail && next.first_lsn > expected {
                disk.close(file).await?;
                return Err(WalError::MissingSegment {
                    segment: next.path.clone(),
                    expected,
                    found: next.first_lsn,
                });
            }
        }
        if damage.is_some() || dirty_tail {
            let damage = damage.unwrap_or(Damage::ZerosThenData);
            // A later group after the damage proves the damaged record was synced (groups are
            // written one after the other, each once the one before is durable): corruption.
            // Nothing after it, or only records of its own group: a write that never finished.
            let later_group = later_group_after(&image, at, expected, header.salt, opts.record_max);
            let torn_tail = later_group.is_none() && last;
            if !torn_tail && opts.recovery == RecoveryMode::Strict {
                disk.close(file).await?;
                return Err(WalError::Corrupt {
                    segment: seg.path,
                    offset: at as u64,
                    lsn: expected,
                    damage,
                });
            }
            zero_from(disk, file, &image, at).await?;
            // Later segments go, newest first, so a crash in between leaves a contiguous log.
            for later in segs[i + 1..].iter().rev() {
                disk.remove_file(&later.path).await?;
                report.removed.push(later.path.clone());
            }
            if i + 1 < segs.len() {
                disk.sync_dir(dir).await?;
            }
            report.cut = Some(Cut {
                segment: seg.path.clone(),
                offset: at as u64,
                lsn: expected,
                damage,
                torn_tail,
            });
        }
        active = Some(ActiveFound {
            segment: seg,
            file,
            salt: header.salt,
            offset: at as u64,
        });
        break;
    }
    if active.is_none() {
        // The last segment was removed above (interrupted creation): the one before it is the
        // active one again.
        if let Some(seg) = sealed.pop() {
            let seg = FoundSegment {
                first_lsn: seg.first_lsn,
                path: seg.path,
                index: seg.index,
            };
            let (file, image, header) = load_segment(disk, &seg.path).await?;
            let mut at = HEADER_LEN;
            let mut lsn = seg.first_lsn;
            while let Frame::Record { frame_len, .. } =
                decode_frame(&image[at..], lsn, header.salt, opts.record_max)
            {
                note_stride(&seg.index, lsn, at);
                at += frame_len;
                lsn += 1;
            }
            active = Some(ActiveFound {
                segment: seg,
                file,
                salt: header.salt,
                offset: at as u64,
            });
        }
    }
    // The truncation is finished (or had nothing left to drop): its marker goes, durably,
    // before anything can be appended at its LSN.
    for lsn in cuts {
        let path = dir.join(cut_name(lsn));
        disk.remove_file(&path).await?;
        disk.sync_dir(dir).await?;
        report.removed.push(path);
    }
    report.segments = sealed.len() + usize::from(active.is_some());
    report.next_lsn = expected;
    Ok(Recovered {
        sealed,
        active,
        report,
    })
}

/// Adds the record of `lsn` at `at` to a segment's index if a stride has passed since the last
/// entry.
pub(crate) fn note_stride(index: &SparseIndex, lsn: Lsn, at: usize) {
    let at = at as u64;
    if at >= index.last_offset(HEADER_LEN as u64) + SparseIndex::STRIDE {
        index.note(lsn, at);
    }
}

/// Finishes a [`skip_to`](crate::Wal::skip_to) that a crash interrupted: its file is in the
/// directory only once it is complete and synced, so the skip happened. Every older segment
/// goes (oldest first, so a crash in between leaves a contiguous log and the skip file), then
/// the skip file takes its segment name.
async fn finish_skip<D: DiskIo>(
    disk: &D,
    dir: &Path,
    segs: &mut Vec<FoundSegment>,
    mut skips: Vec<Lsn>,
    report: &mut RecoveryReport,
) -> Result<()> {
    skips.sort_unstable();
    let Some(skip) = skips.pop() else {
        return Ok(());
    };
    let (older, kept): (Vec<_>, Vec<_>) = segs.drain(..).partition(|s| s.first_lsn < skip);
    for seg in older {
        disk.remove_file(&seg.path).await?;
        report.removed.push(seg.path);
    }
    for stale in skips {
        let path = dir.join(skip_name(stale));
        disk.remove_file(&path).await?;
        report.removed.push(path);
    }
    disk.sync_dir(dir).await?;
    let path = dir.join(segment_name(skip));
    disk.rename(&dir.join(skip_name(skip)), &path).await?;
    disk.sync_dir(dir).await?;
    segs.push(FoundSegment {
        first_lsn: skip,
        path,
        index: Arc::default(),
    });
    segs.extend(kept);
    Ok(())
}

/// Opens the segment at `path` for writing and reads it whole with its header decoded; the file
/// is closed again if either fails.
pub(crate) async fn load_segment<D: DiskIo>(
    disk: &D,
    path: &Path,
) -> Result<(FileId, Vec<u8>, SegmentHeader)> {
    let file = disk
        .open(path, &OpenOptions::new().read(true).write(true))
        .await?;
    let loaded = read_whole(disk, file).await.and_then(|image| {
        let header = SegmentHeader::decode(&image).map_err(|fault| WalError::BadHeader {
            segment: path.to_path_buf(),
            fault,
        })?;
        Ok((image, header))
    });
    match loaded {
        Ok((image, header)) => Ok((file, image, header)),
        Err(e) => {
            let _ = disk.close(file).await;
            Err(e)
        }
    }
}

/// The whole file, read into memory (a segment at most: bounded by `segment_bytes`).
pub(crate) async fn read_whole<D: DiskIo>(disk: &D, file: FileId) -> Result<Vec<u8>> {
    let len = disk.file_len(file).await?;
    let len = usize::try_from(len).map_err(|_| {
        WalError::InvalidOptions(format!("a segment of {len} bytes does not fit in memory"))
    })?;
    let mut image = Vec::with_capacity(len);
    let mut at = 0u64;
    let chunk = 1 << 20;
    while (image.len()) < len {
        let want = chunk.min(len - image.len());
        let buf = disk.alloc(want)?;
        let (res, buf) = disk.read_exact_at(file, resized(buf, want)?, at).await;
        res?;
        image.extend_from_slice(&buf);
        at += want as u64;
    }
    Ok(image)
}

fn resized(mut buf: AlignedBuf, len: usize) -> Result<AlignedBuf> {
    buf.resize(len)?;
    Ok(buf)
}

/// A valid frame after `from` (at an 8-byte boundary, for an LSN after `expected`) that belongs
/// to a group commit later than the one holding `expected`; its offset and LSN.
fn later_group_after(
    image: &[u8],
    from: usize,
    expected: Lsn,
    salt: Salt,
    record_max: usize,
) -> Option<(usize, Lsn)> {
    let most = (image.len() / FRAME_HEADER_LEN) as u64;
    let mut q = from + 8;
    while q + FRAME_HEADER_LEN <= image.len() {
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&image[q + 8..q + 16]);
        let lsn = u64::from_le_bytes(lsn);
        if lsn > expected && lsn - expected <= most {
            if let Frame::Record {
                frame_len, group, ..
            } = decode_frame(&image[q..], lsn, salt, record_max)
            {
                if group > expected {
                    return Some((q, lsn));
                }
                q += frame_len;
                continue;
            }
        }
        q += 8;
    }
    None
}

/// Zeros the file from `from` to its last non-zero byte, and syncs: what follows the cut can
/// never pass for a record later, whatever is appended there.
pub(crate) async fn zero_from<D: DiskIo>(
    disk: &D,
    file: FileId,
    image: &[u8],
    from: usize,
) -> Result<()> {
    let Some(last) = image.iter().rposition(|&b| b != 0).filter(|&l| l >= from) else {
        return Ok(());
    };
    let mut at = from;
    while at <= last {
        let n = (last + 1 - at).min(1 << 20);
        let zeros = disk.alloc(n).and_then(|b| resized_zero(b, n))?;
        let (res, _) = disk.write_all_at(file, zeros, at as u64).await;
        res?;
        at += n;
    }
    disk.fsync(file, SyncKind::Data).await?;
    Ok(())
}

fn resized_zero(mut buf: AlignedBuf, len: usize) -> diskio::Result<AlignedBuf> {
    buf.clear();
    buf.resize(len)?;
    buf.fill(0);
    Ok(buf)
}
