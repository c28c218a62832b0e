//! A reader's open segment and its read window: filled from the log's memory or the file, and,
//! during a replay, the next window read ahead while this one is handed out.

use std::pin::Pin;
use std::sync::Arc;

use diskio::{AlignedBuf, DiskIo, FileId};

use crate::Lsn;
use crate::error::Result;
use crate::format::{Salt, whole_frames};
use crate::state::{Inner, SegmentRef, SparseIndex};

/// Bytes read from a segment at a time (more when one record is larger).
/// The first read window of a segment: small, so a reader that starts at an LSN (a seek) or
/// follows the tail reads little.
const WINDOW_MIN: usize = 64 << 10;
/// The largest read window: a replay's windows double up to it, so each read (a hop to the
/// backend) carries more.
const WINDOW_MAX: usize = 1 << 20;

/// The segment a reader is in, and its window of bytes read from it.
pub(crate) struct OpenSegment {
    pub(crate) file: FileId,
    pub(crate) first_lsn: Lsn,
    pub(crate) salt: Salt,
    /// The segment's sparse index: where frames start, known without reading them.
    index: Arc<SparseIndex>,
    /// LSN of the frame at `pos`.
    pub(crate) lsn: Lsn,
    /// File offset of the next frame.
    pub(crate) pos: u64,
    /// Bytes read from `window_at`: one buffer, reused, that reads land in (no copy).
    pub(crate) window: AlignedBuf,
    pub(crate) window_at: u64,
    /// What readers could see when the window was read: records below it were complete then.
    pub(crate) window_visible: Lsn,
    /// Bytes the next read from the file asks for (doubling up to [`WINDOW_MAX`]).
    pub(crate) window_next: usize,
    /// The next window, already being read while this one is verified and handed out.
    ahead: Option<Ahead>,
    /// Whether reading ahead overlaps anything: false once the backend finished a read ahead
    /// as soon as it was started.
    ahead_pays: bool,
}

/// A window read started ahead of need: while a replay verifies and hands out one window, the
/// backend copies in the next.
struct Ahead {
    /// File offset it reads from.
    at: u64,
    /// What readers could see when it was started (as `OpenSegment::window_visible`).
    visible: Lsn,
    read: AheadRead,
}

/// The read of a window ahead, started.
type AheadRead = Pin<Box<dyn Future<Output = (diskio::Result<usize>, AlignedBuf)> + Send>>;

impl OpenSegment {
    /// Segment `seg`, open as `file`, to be read from the frame of `lsn` at file offset `pos`,
    /// with an empty window.
    pub(crate) fn new(file: FileId, seg: &SegmentRef, lsn: Lsn, pos: u64) -> Self {
        Self {
            file,
            first_lsn: seg.first_lsn,
            salt: seg.salt,
            index: Arc::clone(&seg.index),
            lsn,
            pos,
            window: AlignedBuf::empty(),
            window_at: pos,
            window_visible: 0,
            window_next: WINDOW_MIN,
            ahead: None,
            ahead_pays: true,
        }
    }

    /// Waits for the window read ahead, if any, and returns where it was read from, what was
    /// visible then, and the read's outcome and buffer. The file must not be closed before
    /// this.
    pub(crate) async fn settle(&mut self) -> Option<(u64, Lsn, diskio::Result<usize>, AlignedBuf)> {
        let ahead = self.ahead.take()?;
        let (res, buf) = ahead.read.await;
        Some((ahead.at, ahead.visible, res, buf))
    }
}

/// Makes sure the window holds at least `need` bytes from `seg.pos` (fewer at end of file):
/// from the log's memory where it holds them (`direct_io`), else from the file.
pub(crate) async fn fill<D: DiskIo>(
    inner: &Arc<Inner<D>>,
    seg: &mut OpenSegment,
    need: usize,
    visible: Lsn,
) -> Result<()> {
    let disk = &inner.disk;
    let start = (seg.pos - seg.window_at) as usize;
    if seg.window.len() >= start + need {
        return Ok(());
    }
    // The window read ahead, if it holds what is needed from here; else its buffer is reused
    // below.
    let mut spare = None;
    if let Some((at, ahead_visible, res, buf)) = seg.settle().await {
        let held = seg.pos.checked_sub(at).map(|skip| skip as usize + need);
        if res.is_ok() && held.is_some_and(|held| buf.len() >= held) {
            let old = std::mem::replace(&mut seg.window, buf);
            seg.window_at = at;
            seg.window_visible = ahead_visible;
            read_ahead(inner, seg, old).await;
            return Ok(());
        }
        spare = Some(buf);
    }
    seg.window_visible = visible;
    let want = need.max(seg.window_next);
    seg.window_at = seg.pos;
    if inner
        .direct
        .read(seg.first_lsn, seg.pos, want, &mut seg.window)?
        > 0
    {
        // Held bytes end where the last group ended: nothing past them to read.
        return Ok(());
    }
    seg.window_next = (seg.window_next * 2).min(WINDOW_MAX);
    // Read straight into the window's buffer. It is kept at its full length between reads, so
    // making it `want` bytes long again zeroes nothing after a full read.
    let mut buf = std::mem::take(&mut seg.window);
    if buf.capacity() < want || buf.alignment() < disk.alignment() {
        buf = match spare.take() {
            Some(b) if b.capacity() >= want && b.alignment() >= disk.alignment() => b,
            _ => disk.alloc(want)?,
        };
    }
    buf.resize(want)?;
    let (res, buf) = disk.read_at(seg.file, buf, seg.pos).await;
    seg.window = buf;
    let mut n = match res {
        Ok(n) => n,
        Err(e) => {
            seg.window.clear();
            return Err(e.into());
        }
    };
    // A short read before the end of the file (rare): read on, appending.
    while n > 0 && seg.window.len() < want {
        let left = want - seg.window.len();
        let more = disk.alloc(left).and_then(|mut b| {
            b.resize(left)?;
            Ok(b)
        })?;
        let at = seg.pos + seg.window.len() as u64;
        let (res, more) = disk.read_at(seg.file, more, at).await;
        n = res?;
        seg.window.extend_from_slice(&more[..n])?;
    }
    if want >= WINDOW_MAX && seg.window.len() >= want {
        // A full window of the largest size: a replay. Read the next one meanwhile.
        let spare = match spare {
            Some(b) => b,
            None => AlignedBuf::empty(),
        };
        read_ahead(inner, seg, spare).await;
    }
    Ok(())
}

/// Starts reading the window that follows the whole frames of the current one, into `buf`,
/// when the current window was a full one: the backend copies it in while the reader verifies
/// and hands out the current one. The read is started (polled once) here; a backend that
/// finishes it within that poll (diskio-raw serves a cached read inside `io_uring_enter`, on
/// the caller's thread) gains nothing from reading ahead, so this reader stops doing it.
///
/// A replay from the page cache spends its time on two things: verifying a window (one CRC32C
/// per frame, about 45% of it with 256-byte records) and copying the next one in (about 30%).
/// On the blocking backend a pool thread does the copy meanwhile: in four alternated rounds of
/// a 1M-record replay with `next_batch` on two cores, 3.7-4.9 GiB/s (median 4.2) against
/// 2.7-3.9 (3.3) without. Running diskio-raw's read on another thread (a spawned or blocking
/// task) measured no faster than reading on demand (medians 5.3-6.2 GiB/s against 6.0).
async fn read_ahead<D: DiskIo>(inner: &Arc<Inner<D>>, seg: &mut OpenSegment, mut buf: AlignedBuf) {
    if !seg.ahead_pays {
        return;
    }
    // The next window starts at the last frame of this one that the sparse index knows (the
    // frames after it, at most a stride, are read twice), found without touching the bytes.
    // Walking the frames' lengths instead is a chain of dependent loads through memory that
    // another thread has just written: 270 us per 1 MiB window of 256-byte records on the
    // blocking backend, half of its replay's time. A wrong offset only wastes the read ahead.
    let window_end = seg.window_at + seg.window.len() as u64;
    let at = match seg.index.last_in(seg.pos, window_end) {
        Some(at) => at,
        None => {
            let from = (seg.pos - seg.window_at) as usize;
            let Some(rest) = seg.window.get(from..) else {
                return;
            };
            let (end, _) = whole_frames(rest, rest.len());
            if end == 0 {
                return;
            }
            seg.pos + end as u64
        }
    };
    // Taken before the read starts: records below it are complete in what the read finds.
    let visible = inner.visible_end();
    if buf.capacity() < WINDOW_MAX || buf.alignment() < inner.disk.alignment() {
        buf = match inner.disk.alloc(WINDOW_MAX) {
            Ok(b) => b,
            Err(_) => return,
        };
    }
    if buf.resize(WINDOW_MAX).is_err() {
        return;
    }
    let file = seg.file;
    let log = Arc::clone(inner);
    let mut read: AheadRead = Box::pin(async move { log.disk.read_at(file, buf, at).await });
    if let Some(out) = crate::group::poll_once(read.as_mut()).await {
        seg.ahead_pays = false;
        read = Box::pin(std::future::ready(out));
    }
    seg.ahead = Some(Ahead { at, visible, read });
}
