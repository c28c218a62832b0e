//! What the handle, the committer and the segment work share: the log's state under one lock,
//! and the wake-ups between them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use diskio::{DiskIo, FileId};

use crate::Lsn;
use crate::direct::DirectCache;
use crate::error::{Result, WalError};
use crate::format::Salt;
use crate::options::{Durability, WalOptions};
use crate::queue::Queue;
use crate::recovery::FoundSegment;
use crate::stats::Counters;
use crate::wakeup::Wakeup;

/// Everything behind a [`Wal`](crate::Wal) handle and its clones.
pub(crate) struct Inner<D> {
    pub(crate) disk: D,
    pub(crate) dir: PathBuf,
    pub(crate) opts: WalOptions,
    state: Mutex<State>,
    /// Woken when the written or durable watermark moves, or the log is poisoned or closed.
    pub(crate) progress: Wakeup,
    /// Woken when queued bytes drop.
    pub(crate) space: Wakeup,
    pub(crate) counters: Counters,
    /// The committer's write buffers, kept between groups (two when one group is prepared
    /// while the one before it is written).
    pub(crate) write_bufs: Mutex<Vec<diskio::AlignedBuf>>,
    /// With `direct_io`: the tail block and the latest groups of the active segment.
    pub(crate) direct: DirectCache,
    /// The `Periodic` timer thread, woken to exit when the log closes or goes.
    pub(crate) ticker: Mutex<Option<std::thread::Thread>>,
    /// Held by whatever removes or rewrites segments (retention, truncation, a skip): one at a
    /// time.
    pub(crate) rewrites: tokio::sync::Mutex<()>,
}

impl<D> Drop for Inner<D> {
    fn drop(&mut self) {
        let ticker = self
            .ticker
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = ticker.take() {
            t.unpark();
        }
    }
}

/// The log's state. Every change is made under the lock, whole, before it is released.
pub(crate) struct State {
    /// The LSN the next append gets.
    pub(crate) next_lsn: Lsn,
    /// Records appended and not yet taken by the committer.
    pub(crate) pending: Pending,
    /// How far the log is written and durable.
    pub(crate) marks: Marks,
    /// A committer task is running (or about to).
    pub(crate) committing: bool,
    /// The running committer runs inside an appender's future
    /// ([`LedCommitter`](crate::committer::LedCommitter)), not as a task of its own.
    pub(crate) led: bool,
    /// Someone waits for a sync of what is written ([`Wal::sync`](crate::Wal::sync), the
    /// `Periodic` timer).
    pub(crate) sync_wanted: bool,
    /// The failure that poisoned the log.
    pub(crate) poison: Option<Arc<diskio::Error>>,
    pub(crate) closed: bool,
    /// The log's files are being rewritten ([`Wal::truncate_from`](crate::Wal::truncate_from),
    /// [`Wal::skip_to`](crate::Wal::skip_to)): appends wait.
    pub(crate) rewriting: bool,
    pub(crate) segments: Segments,
}

/// The queue of encoded records waiting for the committer.
pub(crate) struct Pending {
    /// Encoded frames not yet taken by the committer (CRCs still partial).
    pub(crate) queue: Queue,
    /// LSN of the first frame in `queue`.
    pub(crate) first: Lsn,
    /// When the oldest record in `queue` was queued.
    pub(crate) since: Option<Instant>,
    /// Bytes queued or being written: what `queued_bytes_max` bounds.
    pub(crate) bytes: usize,
}

/// The watermarks of group commit.
pub(crate) struct Marks {
    /// Every LSN below this is written to the file.
    pub(crate) written_end: Lsn,
    /// Every LSN below this is durable.
    pub(crate) durable_end: Lsn,
    /// When the log's data was last synced (for `Periodic`).
    pub(crate) last_sync: Instant,
}

/// The segments of the log.
pub(crate) struct Segments {
    /// The first LSN still in the log.
    pub(crate) first_lsn: Lsn,
    /// Sealed segments, oldest first.
    pub(crate) sealed: Vec<SegmentRef>,
    /// The segment being written.
    pub(crate) active: Option<Active>,
    /// The next segment's file, created and zero-filled in the background, not yet named.
    pub(crate) prepared: Option<Prepared>,
    /// A segment is being prepared.
    pub(crate) preparing: bool,
    /// Segments prepared so far (names the temporary files).
    pub(crate) prepared_count: u64,
    /// Rotation waits for the segment being prepared: its fill stops at the next chunk and
    /// preallocates the rest.
    pub(crate) rush: bool,
}

impl Segments {
    /// Every segment of the log, oldest first.
    pub(crate) fn all(&self) -> Vec<SegmentRef> {
        let mut v = self.sealed.clone();
        if let Some(a) = &self.active {
            v.push(a.seg.clone());
        }
        v
    }
}

/// A segment of the log that the reader can find.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRef {
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
    /// Where some of its records start, for readers that begin inside it.
    pub(crate) index: Arc<SparseIndex>,
    /// The salt in its header, which the log read (recovery) or wrote: a reader opening the
    /// segment need not read the header again (its records, verified with this salt, would
    /// not pass if the file were not the one the log knows).
    pub(crate) salt: Salt,
}

impl SegmentRef {
    /// A segment recovery found, with the salt it read in its header.
    pub(crate) fn found(s: FoundSegment, salt: Salt) -> Self {
        Self {
            first_lsn: s.first_lsn,
            path: s.path,
            index: s.index,
            salt,
        }
    }
}

/// A segment's sparse index: the file offset of a record every [`STRIDE`](Self::STRIDE) bytes
/// or so, so a reader starting at an LSN inside a segment scans at most that much. Kept in
/// memory only: recovery, which reads every record anyway, builds it at open, and the committer
/// extends it as groups are written. About 16 bytes per 64 KiB of log (0.02%).
#[derive(Debug, Default)]
pub(crate) struct SparseIndex {
    /// (LSN, offset of its frame), in LSN order.
    entries: Mutex<Vec<(Lsn, u64)>>,
}

impl SparseIndex {
    /// Bytes of log between two entries, at least.
    pub(crate) const STRIDE: u64 = 64 << 10;

    fn entries(&self) -> MutexGuard<'_, Vec<(Lsn, u64)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The offset of the last entry (or `from` if there is none): where the next stride starts.
    pub(crate) fn last_offset(&self, from: u64) -> u64 {
        self.entries().last().map_or(from, |e| e.1)
    }

    /// Records that the frame of `lsn` starts at `offset` (after every entry so far).
    pub(crate) fn note(&self, lsn: Lsn, offset: u64) {
        let mut e = self.entries();
        if e.last().is_none_or(|l| l.0 < lsn && l.1 < offset) {
            e.push((lsn, offset));
        }
    }

    /// The last entry at or before `lsn`.
    pub(crate) fn seek(&self, lsn: Lsn) -> Option<(Lsn, u64)> {
        let e = self.entries();
        let i = e.partition_point(|x| x.0 <= lsn);
        i.checked_sub(1).map(|i| e[i])
    }

    /// The offset of the last entry after `after` and at most `upto`: a frame boundary found
    /// without reading the bytes before it.
    pub(crate) fn last_in(&self, after: u64, upto: u64) -> Option<u64> {
        let e = self.entries();
        let i = e.partition_point(|x| x.1 <= upto);
        i.checked_sub(1).map(|i| e[i].1).filter(|&at| at > after)
    }

    /// Drops the entries of `lsn` and later (a truncation cut the segment there).
    pub(crate) fn cut(&self, lsn: Lsn) {
        self.entries().retain(|e| e.0 < lsn);
    }
}

/// The segment being written.
pub(crate) struct Active {
    pub(crate) seg: SegmentRef,
    pub(crate) file: FileId,
    /// Where the next group goes.
    pub(crate) offset: u64,
}

/// A segment file made ready ahead of time under a temporary name.
pub(crate) struct Prepared {
    pub(crate) file: FileId,
    pub(crate) path: PathBuf,
}

impl State {
    /// The state of a log opened with `next` as its next LSN.
    pub(crate) fn new(next: Lsn, segments: Segments) -> Self {
        Self {
            next_lsn: next,
            pending: Pending {
                queue: Queue::default(),
                first: next,
                since: None,
                bytes: 0,
            },
            marks: Marks {
                written_end: next,
                durable_end: next,
                last_sync: Instant::now(),
            },
            committing: false,
            led: false,
            sync_wanted: false,
            poison: None,
            closed: false,
            rewriting: false,
            segments,
        }
    }

    /// `Ok` while the log takes calls.
    pub(crate) fn usable(&self) -> Result<()> {
        if let Some(cause) = &self.poison {
            return Err(WalError::Poisoned {
                cause: Arc::clone(cause),
            });
        }
        if self.closed {
            return Err(WalError::Closed);
        }
        Ok(())
    }
}

impl<D: DiskIo> Inner<D> {
    pub(crate) fn new(
        disk: D,
        dir: PathBuf,
        opts: WalOptions,
        state: State,
        direct: DirectCache,
    ) -> Self {
        Self {
            disk,
            dir,
            opts,
            state: Mutex::new(state),
            progress: Wakeup::default(),
            space: Wakeup::default(),
            counters: Counters::default(),
            write_bufs: Mutex::new(Vec::new()),
            direct,
            ticker: Mutex::new(None),
            rewrites: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is completed before the lock is released; a panic elsewhere leaves a
        // consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What readers may see: below this LSN every record is written, and durable in `Sync`.
    pub(crate) fn visible_end(&self) -> Lsn {
        self.visible_in(&self.lock())
    }

    /// [`visible_end`](Self::visible_end) of a state already locked.
    pub(crate) fn visible_in(&self, st: &State) -> Lsn {
        match self.opts.durability {
            Durability::Sync => st.marks.durable_end,
            Durability::None | Durability::Periodic(_) => st.marks.written_end,
        }
    }

    /// The segments, oldest first, and the first LSN still in the log.
    pub(crate) fn segments(&self) -> (Vec<SegmentRef>, Lsn) {
        let st = self.lock();
        (st.segments.all(), st.segments.first_lsn)
    }

    /// Poisons the log with `cause` (the first cause wins): every waiter wakes and fails.
    pub(crate) fn poison_with(&self, cause: Arc<diskio::Error>) {
        {
            let mut st = self.lock();
            if st.poison.is_none() {
                tracing::error!(error = %cause, dir = %self.dir.display(), "WAL poisoned");
                st.poison = Some(cause);
            }
            st.committing = false;
            st.led = false;
        }
        self.progress.wake();
        self.space.wake();
    }

    /// Waits until `done` holds under the lock, woken by `progress`.
    pub(crate) async fn wait_for(&self, mut done: impl FnMut(&mut State) -> bool) {
        self.progress
            .until(|| done(&mut self.lock()).then_some(()))
            .await;
    }
}
