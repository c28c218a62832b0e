//! The committer: one task at a time takes the queued records as a group, writes it with one
//! write (and in `Sync` mode one sync), moves the watermarks and wakes the appenders; while it
//! writes, the next group gathers (in `None` and `Periodic` mode it is also prepared: sealed
//! and laid out in a second write buffer). It exists while there is work.

use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use diskio::{DiskIo, FileId, SyncKind};
use tracing::Instrument;

use crate::error::{Result, WalError};
use crate::group::Group;
use crate::options::Durability;
use crate::state::{Inner, State};

/// What the committer does next.
enum Work {
    /// Write (and in `Sync` mode sync) a group.
    Write(Group),
    /// The next record does not fit in the active segment: seal it, start the next.
    Rotate,
    /// Sync what is written (`Wal::sync`, `Periodic`).
    Sync(FileId),
}

impl<D: DiskIo> Inner<D> {
    /// Starts a committer task on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`] (and the log poisoned) when no runtime is at hand.
    pub(crate) fn spawn_committer(inner: &Arc<Self>) -> Result<()> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(Self::commit_loop(CommitterGuard::new(inner)));
                Ok(())
            }
            Err(_) => Err(inner.no_runtime()),
        }
    }

    /// Poisons the log because a committer cannot be spawned here.
    fn no_runtime(&self) -> WalError {
        let cause = Arc::new(diskio::Error::Unsupported {
            reason: "the WAL must be called from within a Tokio runtime".to_owned(),
        });
        self.poison_with(cause.clone());
        WalError::Poisoned { cause }
    }

    /// The committer: takes groups from the queue and writes (and syncs) them, one after the
    /// other, until the queue is empty.
    async fn commit_loop(mut guard: CommitterGuard<D>) {
        let inner = Arc::clone(&guard.inner);
        while let Some(work) = inner.next_work() {
            let mut shared = false;
            let res = match work {
                Work::Write(group) => {
                    shared = group.records > 1;
                    let span = tracing::debug_span!(
                        "wal_group",
                        first = group.first,
                        records = group.records,
                        offset = group.offset
                    );
                    if inner.opts.durability == Durability::Sync {
                        inner.write_group(group).instrument(span).await
                    } else {
                        inner.write_groups_overlapped(group).instrument(span).await
                    }
                }
                Work::Rotate => {
                    let span = tracing::debug_span!("wal_rotate", dir = %inner.dir.display());
                    // Boxed: its future is the committer's largest (7 KiB, against 3 KiB for a
                    // group's write), and rotation comes once per segment, while every led
                    // commit moves the committer's future into a box of its own.
                    Box::pin(Inner::rotate(&inner)).instrument(span).await
                }
                Work::Sync(file) => inner.sync_active(file).await,
            };
            if let Err(cause) = res {
                inner.poison_with(Arc::new(cause));
                break;
            }
            // The appenders of a shared durable group were just woken, and most append again at
            // once. Let them run (and queue) before the next group is taken, so that it carries
            // them too rather than only the records that came in during the write: at 64
            // writers that took the log from 1.10-1.34x to 1.16-1.72x WriteAhead's records/s
            // (1.3x or more in 9 of 10 runs) with p99 from 0.61-1.10 ms to 0.44-0.70 ms. A lone
            // writer's group (one record) does not yield: nobody else is there to wait for.
            // An appender running the committer in its own future does not yield: it returns
            // as soon as its record is durable, and a lone batch-appender must not hand every
            // batch to a spawned task.
            if shared && inner.opts.durability == Durability::Sync && !inner.lock().led {
                tokio::task::yield_now().await;
            }
        }
        guard.finished = true;
    }

    /// Decides the committer's next step under the lock; `None` when there is nothing to do
    /// (and the committer is marked stopped in the same critical section).
    fn next_work(&self) -> Option<Work> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let work = self.next_work_in(st);
        if work.is_none() {
            st.committing = false;
            st.led = false;
            drop(guard);
            self.progress.wake();
        }
        work
    }

    /// [`next_work`](Self::next_work) on the locked state.
    fn next_work_in(&self, st: &mut State) -> Option<Work> {
        if st.poison.is_some() {
            return None;
        }
        let active = st.segments.active.as_ref()?;
        let (file, offset) = (active.file, active.offset);
        let marks = &st.marks;
        if let Durability::Periodic(every) = self.opts.durability {
            if marks.durable_end < marks.written_end && marks.last_sync.elapsed() >= every {
                return Some(Work::Sync(file));
            }
        }
        if st.pending.queue.is_empty() {
            if st.sync_wanted && st.marks.durable_end < st.marks.written_end {
                return Some(Work::Sync(file));
            }
            st.sync_wanted = false;
            return None;
        }
        match self.take_group(st, offset) {
            Some(group) => Some(Work::Write(group)),
            // The first frame does not fit in this segment.
            None => Some(Work::Rotate),
        }
    }

    /// The group to write right after a group ending at `end` of the active segment, taken
    /// while that one is still being written: `None` when there is none, when the log is
    /// poisoned, when the next record needs a new segment, or when a `Periodic` sync is due
    /// (the committer's main loop then takes over).
    pub(crate) fn next_group_after(&self, end: u64) -> Option<Group> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.poison.is_some() || st.pending.queue.is_empty() {
            return None;
        }
        if let Durability::Periodic(every) = self.opts.durability {
            let marks = &st.marks;
            if marks.durable_end < marks.written_end && marks.last_sync.elapsed() >= every {
                return None;
            }
        }
        self.take_group(st, end)
    }

    /// Takes whole frames from the front of the queue as a group to go at `offset` of the
    /// active segment, at most `group_bytes_max` and what the segment has room for; `None` if
    /// there is no active segment, or the queue is empty, or its first frame does not fit.
    fn take_group(&self, st: &mut State, offset: u64) -> Option<Group> {
        let active = st.segments.active.as_ref()?;
        let (file, salt) = (active.file, active.seg.salt);
        let index = Arc::clone(&active.seg.index);
        let room = self.opts.segment_bytes.saturating_sub(offset);
        let limit = (self.opts.group_bytes_max as u64).min(room) as usize;
        let pending = &mut st.pending;
        let chunks = pending.queue.take(limit);
        if chunks.is_empty() {
            return None;
        }
        let records: u64 = chunks.iter().map(|c| c.records).sum();
        let first = pending.first;
        pending.first += records;
        debug_assert_eq!(pending.first + pending.queue.records(), st.next_lsn);
        // What stays queued waited at least since now (a close enough bound for the next group).
        let since = if pending.queue.is_empty() {
            pending.since.take()
        } else {
            pending.since.replace(Instant::now())
        };
        Some(Group {
            chunks,
            first,
            records,
            since,
            file,
            salt,
            offset,
            index,
        })
    }

    /// Syncs the active segment: everything written so far becomes durable.
    pub(crate) async fn sync_active(&self, file: FileId) -> diskio::Result<()> {
        let target = self.lock().marks.written_end;
        let started = Instant::now();
        self.disk.fsync(file, SyncKind::Data).await?;
        let done = Instant::now();
        self.counters.note_sync(started, done);
        {
            let mut st = self.lock();
            st.marks.durable_end = st.marks.durable_end.max(target);
            st.marks.last_sync = done;
        }
        self.progress.wake();
        Ok(())
    }

    /// Starts the `Periodic` timer: a thread that asks for a sync every `every` while records
    /// wait to be durable and the committer has not synced meanwhile.
    pub(crate) fn start_ticker(inner: &Arc<Self>, every: std::time::Duration) -> Result<()> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            WalError::InvalidOptions("Periodic durability needs a Tokio runtime at open".to_owned())
        })?;
        let weak = Arc::downgrade(inner);
        let thread = std::thread::Builder::new()
            .name("wal-periodic".to_owned())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(every);
                    let Some(inner) = weak.upgrade() else { return };
                    let start = {
                        let mut st = inner.lock();
                        if st.closed || st.poison.is_some() {
                            return;
                        }
                        let marks = &st.marks;
                        if marks.durable_end >= st.next_lsn || marks.last_sync.elapsed() < every {
                            continue;
                        }
                        st.sync_wanted = true;
                        let start = !st.committing;
                        st.committing = true;
                        start
                    };
                    if start {
                        handle.spawn(Self::commit_loop(CommitterGuard::new(&inner)));
                    }
                }
            })
            .map_err(|e| {
                WalError::from(diskio::Error::io(
                    diskio::Context::new(diskio::Op::Setup),
                    e,
                ))
            })?;
        *inner.ticker.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(thread.thread().clone());
        Ok(())
    }
}

/// A committer run by the appender that found the log idle, inside that appender's own future,
/// so that a lone writer's commit takes no spawn and no hand-off between tasks: the disk's
/// completion wakes the appender itself (see [`Wal::append`](crate::Wal::append)).
///
/// When the appender's records are durable and the committer still has work (records other
/// tasks queued meanwhile), or when the appender's future is dropped mid-commit, the rest runs
/// on as a spawned task: dropping this spawns it. Nothing is lost either way.
pub(crate) struct LedCommitter<D: DiskIo> {
    inner: Arc<Inner<D>>,
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<D: DiskIo> LedCommitter<D> {
    /// A committer for `inner`, whose `committing` and `led` flags the caller has just set.
    pub(crate) fn new(inner: &Arc<Inner<D>>) -> Self {
        Self {
            inner: Arc::clone(inner),
            run: Some(Box::pin(Inner::commit_loop(CommitterGuard::new(inner)))),
        }
    }

    /// Runs the committer until it waits (for the disk, or for a segment) or runs out of work;
    /// whether it still runs.
    pub(crate) fn poll(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if let Some(run) = self.run.as_mut() {
            if run.as_mut().poll(cx).is_ready() {
                self.run = None;
            }
        }
        self.run.is_some()
    }
}

impl<D: DiskIo> Drop for LedCommitter<D> {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else { return };
        // The committer goes on as a task of its own.
        self.inner.lock().led = false;
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(run)),
            // Dropping `run` poisons too (its guard), after this more telling cause.
            Err(_) => drop(self.inner.no_runtime()),
        }
    }
}

/// Owned by a committer task from before it is spawned: if the task is dropped before it
/// finished (its runtime shut down, possibly before ever running it), the log is poisoned. The
/// group it was writing may or may not be on disk, so nothing after it may be acknowledged, and
/// no appender is left waiting for a committer that will never come.
struct CommitterGuard<D: DiskIo> {
    inner: Arc<Inner<D>>,
    finished: bool,
}

impl<D: DiskIo> CommitterGuard<D> {
    fn new(inner: &Arc<Inner<D>>) -> Self {
        Self {
            inner: Arc::clone(inner),
            finished: false,
        }
    }
}

impl<D: DiskIo> Drop for CommitterGuard<D> {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.poison_with(Arc::new(diskio::Error::Shutdown {
                ctx: diskio::Context::new(diskio::Op::WriteSync),
            }));
        }
    }
}
