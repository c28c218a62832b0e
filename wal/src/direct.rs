//! `O_DIRECT` mode: the partly filled last block that the next group writes again, the latest
//! groups kept in memory for readers (the page cache holds no copy of them), and the probes that
//! decide whether a directory takes `O_DIRECT` at all.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use diskio::{AlignedBuf, DiskIo, FileId, OpenOptions};

use crate::Lsn;
use crate::format::{DIRECT_BLOCK, TEMP_SUFFIX};
use crate::recovery::ActiveFound;

/// What `direct_io` keeps in memory for the active segment. Only the committer (and open and
/// rotation) change it; readers copy from it.
pub(crate) struct DirectCache {
    /// The bytes of the active segment's partly filled last block, which the next group writes
    /// again.
    tail: Mutex<Vec<u8>>,
    /// The active segment's latest groups.
    recent: Mutex<Recent>,
}

/// The latest bytes written to the active segment.
struct Recent {
    /// First LSN of the segment they belong to.
    segment: Option<Lsn>,
    /// File offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
}

impl Recent {
    /// Most bytes kept: at least one reader window (at most 1 MiB).
    const KEEP: usize = 1 << 20;

    /// Drops the oldest bytes once twice [`KEEP`](Self::KEEP) are held, keeping the newest
    /// `KEEP` (so the copy is paid once per `KEEP` bytes written).
    fn trim(&mut self) {
        if self.bytes.len() > 2 * Self::KEEP {
            let drop = self.bytes.len() - Self::KEEP;
            self.bytes.drain(..drop);
            self.start += drop as u64;
        }
    }
}

impl DirectCache {
    /// The cache of a log whose active segment starts at LSN `segment` (if there is one yet),
    /// with its next group going to file offset `end`, after the block bytes `tail`.
    pub(crate) fn new(tail: Vec<u8>, segment: Option<Lsn>, end: u64) -> Self {
        Self {
            tail: Mutex::new(tail),
            recent: Mutex::new(Recent {
                segment,
                start: end,
                bytes: Vec::new(),
            }),
        }
    }

    fn tail(&self) -> MutexGuard<'_, Vec<u8>> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the tail block's bytes, for the next group to write first.
    pub(crate) fn take_tail(&self) -> Vec<u8> {
        std::mem::take(&mut *self.tail())
    }

    /// After a group: the new tail block's bytes, and the group's bytes for readers (`None` if
    /// the write buffer did not come back: readers then go to the file from `end` on).
    pub(crate) fn group_written(&self, tail: Vec<u8>, group: Option<&[u8]>, end: u64) {
        *self.tail() = tail;
        let mut recent = self.recent();
        match group {
            // A group of `KEEP` bytes or more: only its newest `KEEP` are kept, so copy only
            // those (a 4 MiB group was copied whole, then most of it dropped).
            Some(bytes) if bytes.len() >= Recent::KEEP => {
                recent.bytes.clear();
                recent
                    .bytes
                    .extend_from_slice(&bytes[bytes.len() - Recent::KEEP..]);
                recent.start = end - Recent::KEEP as u64;
            }
            Some(bytes) => {
                recent.bytes.extend_from_slice(bytes);
                recent.trim();
            }
            None => {
                recent.start = end;
                recent.bytes.clear();
            }
        }
    }

    /// A new active segment starting at LSN `segment`, its records at file offset `start` (a
    /// block boundary).
    pub(crate) fn restart(&self, segment: Lsn, start: u64) {
        self.tail().clear();
        *self.recent() = Recent {
            segment: Some(segment),
            start,
            bytes: Vec::new(),
        };
    }

    /// The active segment is now `segment`, reopened with its next group going to file offset
    /// `end`, after the block bytes `tail` (a truncation moved the end of the log back).
    pub(crate) fn reopened(&self, tail: Vec<u8>, segment: Lsn, end: u64) {
        *self.tail() = tail;
        *self.recent() = Recent {
            segment: Some(segment),
            start: end,
            bytes: Vec::new(),
        };
    }

    /// Copies into `out` the bytes of segment `segment` from file offset `at` that are held in
    /// memory, at most `max` of them; returns how many.
    /// `out` is replaced only when some bytes are held.
    pub(crate) fn read(
        &self,
        segment: Lsn,
        at: u64,
        max: usize,
        out: &mut AlignedBuf,
    ) -> diskio::Result<usize> {
        let recent = self.recent();
        if recent.segment != Some(segment) || at < recent.start {
            return Ok(0);
        }
        let from = (at - recent.start) as usize;
        let Some(held) = recent.bytes.get(from..).filter(|h| !h.is_empty()) else {
            return Ok(0);
        };
        let n = held.len().min(max);
        out.clear();
        if out.capacity() < n {
            *out = AlignedBuf::with_capacity(n, out.alignment().max(1))?;
        }
        out.extend_from_slice(&held[..n])?;
        Ok(n)
    }
}

/// Refuses a direct file whose `O_DIRECT` alignment is coarser than [`DIRECT_BLOCK`].
pub(crate) fn check_direct<D: DiskIo>(disk: &D, file: FileId) -> diskio::Result<()> {
    match disk.direct_alignment(file)? {
        Some(a)
            if DIRECT_BLOCK % u64::from(a.offset) != 0
                || DIRECT_BLOCK % u64::from(a.memory) != 0 =>
        {
            Err(diskio::Error::Unsupported {
                reason: format!(
                    "O_DIRECT on this file needs {}-byte offsets and {}-byte buffers; the WAL's \
                     direct_io writes {DIRECT_BLOCK}-byte blocks",
                    a.offset, a.memory
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Whether segments in `dir` can be written with `O_DIRECT`: `Err(reason)` if not. A probe
/// file (with the temporary suffix, so a crash leaves nothing that open does not clean up) is
/// created with `O_DIRECT` and removed.
pub(crate) async fn direct_works<D: DiskIo>(
    disk: &D,
    dir: &Path,
) -> diskio::Result<std::result::Result<(), String>> {
    let path = dir.join(format!("direct-probe{TEMP_SUFFIX}"));
    let options = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .direct(true);
    let verdict = match disk.open(&path, &options).await {
        Ok(file) => {
            let checked = check_direct(disk, file).map_err(|e| e.to_string());
            disk.close(file).await?;
            checked
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(e.to_string()),
        Err(e) => return Err(e),
    };
    match disk.remove_file(&path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(verdict)
}

/// Reopens the recovered active segment with `O_DIRECT`; returns it and the bytes of its
/// partly filled last block, which the next group writes again.
pub(crate) async fn reopen_direct<D: DiskIo>(
    disk: &D,
    found: ActiveFound,
) -> diskio::Result<(ActiveFound, Vec<u8>)> {
    let from = found.offset - found.offset % DIRECT_BLOCK;
    let n = (found.offset - from) as usize;
    let mut tail = Vec::with_capacity(n);
    if n > 0 {
        let (res, buf) = disk.read_exact_at(found.file, disk.alloc(n)?, from).await;
        res?;
        tail.extend_from_slice(&buf);
    }
    disk.close(found.file).await?;
    let file = disk
        .open(
            &found.segment.path,
            &OpenOptions::new().read(true).write(true).direct(true),
        )
        .await?;
    if let Err(e) = check_direct(disk, file) {
        let _ = disk.close(file).await;
        return Err(e);
    }
    Ok((ActiveFound { file, ..found }, tail))
}
