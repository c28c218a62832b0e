//! The log: appenders, the group committer, segments.

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use diskio::{AlignedBuf, DiskIo, FileId, OpenOptions, SyncKind};
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::error::{Result, WalError};
use crate::format::{HEADER_LEN, SegmentHeader, TEMP_SUFFIX, frame_len, seal_frames, segment_name};
use crate::options::{Durability, WalOptions};
use crate::queue::{Chunk, Queue};
use crate::reader::Reader;
use crate::recovery::{ActiveFound, FoundSegment, RecoveryReport, recover};
use crate::{Lsn, Summary, WalStats};

/// A segmented, checksummed, group-commit write-ahead log on any [`DiskIo`] backend.
///
/// Cloning is cheap and every clone appends to the same log; futures are `Send`. Appends from
/// any number of tasks are gathered into groups: while one group is being written and synced,
/// the next one gathers, so the group grows with the load and no timer is needed. The committer
/// is a Tokio task that exists while there is work, spawned on the runtime of the append that
/// found it idle (so calls must come from within a Tokio runtime).
pub struct Wal<D: DiskIo> {
    inner: Arc<Inner<D>>,
}

impl<D: DiskIo> Clone for Wal<D> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D: DiskIo> std::fmt::Debug for Wal<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Wal")
            .field("dir", &self.inner.dir)
            .field("next_lsn", &st.next_lsn)
            .field("durable_end", &st.durable_end)
            .field("poisoned", &st.poison.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner<D> {
    pub(crate) disk: D,
    pub(crate) dir: PathBuf,
    pub(crate) opts: WalOptions,
    state: Mutex<State>,
    /// Woken when the written or durable watermark moves, or the log is poisoned or closed.
    progress: Notify,
    /// Woken when queued bytes drop.
    space: Notify,
    counters: Counters,
    /// The committer's write buffer, kept between groups.
    write_buf: Mutex<Option<AlignedBuf>>,
    /// With `direct_io`: the bytes of the active segment's partly filled last block, which the
    /// next group writes again (only the committer, and open and rotation, touch it).
    tail: Mutex<Vec<u8>>,
    /// With `direct_io`: the active segment's latest groups, which readers of fresh records take
    /// from memory (the page cache holds no copy of them).
    recent: Mutex<Recent>,
    /// The `Periodic` timer thread, woken to exit when the log closes or goes.
    ticker: Mutex<Option<std::thread::Thread>>,
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

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    groups: AtomicU64,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    rotations: AtomicU64,
    /// Updated by the committer, once per group or sync.
    histograms: Mutex<Histograms>,
}

/// Distributions the committer records.
struct Histograms {
    /// Records per group.
    group_records: Histogram<u64>,
    /// Nanoseconds from the oldest record of a group being queued to the group being done
    /// (durable in `Sync`, written in `None`): the worst wait of that group's appenders.
    commit_ns: Histogram<u64>,
    /// Nanoseconds per sync (a group's write + sync, or a lone sync).
    sync_ns: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            group_records: histogram(),
            commit_ns: histogram(),
            sync_ns: histogram(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant bounds, valid: nothing a user or the OS can change
    Histogram::new_with_bounds(1, 1 << 40, 2).expect("valid histogram bounds")
}

/// A segment of the log that the reader can find.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRef {
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
}

struct Active {
    seg: SegmentRef,
    file: FileId,
    salt: u64,
    /// Where the next group goes.
    offset: u64,
}

struct State {
    next_lsn: Lsn,
    /// Encoded frames not yet taken by the committer (CRCs still partial).
    queue: Queue,
    /// LSN of the first frame in `queue`.
    queue_first: Lsn,
    /// When the oldest record in `queue` was queued.
    queue_since: Option<Instant>,
    /// Bytes queued or being written.
    queued_bytes: usize,
    committing: bool,
    /// Every LSN below this is written to the file.
    written_end: Lsn,
    /// Every LSN below this is durable.
    durable_end: Lsn,
    sync_wanted: bool,
    /// When the log's data was last synced (for `Periodic`).
    last_sync: Instant,
    poison: Option<Arc<diskio::Error>>,
    closed: bool,
    /// The first LSN still in the log.
    first_lsn: Lsn,
    sealed: Vec<SegmentRef>,
    active: Option<Active>,
    /// The next segment's file, created and zero-filled in the background, not yet named.
    prepared: Option<Prepared>,
    preparing: bool,
    prepared_count: u64,
}

/// The latest bytes written to the active segment, for readers (`direct_io` only).
struct Recent {
    /// First LSN of the segment they belong to.
    segment: Option<Lsn>,
    /// File offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
}

impl Recent {
    /// Most bytes kept; at least one reader window (256 KiB).
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

/// A segment file made ready ahead of time under a temporary name.
struct Prepared {
    file: FileId,
    path: PathBuf,
}

/// What the committer does next.
enum Work {
    Write {
        chunks: Vec<Chunk>,
        first: Lsn,
        records: u64,
        since: Option<Instant>,
        file: FileId,
        salt: u64,
        offset: u64,
    },
    Rotate,
    Sync(FileId),
}

impl<D: DiskIo> Wal<D> {
    /// Opens (or creates) the log in `dir` on `disk`: recovers what is there (see
    /// [`RecoveryReport`]) and makes the log ready to append.
    ///
    /// # Errors
    ///
    /// [`WalError::InvalidOptions`]; recovery's errors ([`WalError::Corrupt`],
    /// [`WalError::MissingSegment`], [`WalError::BadHeader`]); [`WalError::Io`].
    pub async fn open(
        disk: D,
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<(Self, RecoveryReport)> {
        opts.validate()?;
        let mut opts = opts;
        let dir = dir.as_ref().to_path_buf();
        let found = recover(&disk, &dir, &opts).await?;
        if opts.direct_io {
            if let Err(reason) = direct_works(&disk, &dir).await? {
                tracing::warn!(dir = %dir.display(), %reason, "wal: O_DIRECT refused here; writing through the page cache");
                opts.direct_io = false;
            }
        }
        let report = found.report.clone();
        let next = report.next_lsn;
        let sealed = found.sealed.into_iter().map(seg_ref).collect();
        let (found_active, tail) = match found.active {
            Some(a) if opts.direct_io => {
                let (a, tail) = reopen_direct(&disk, a).await?;
                (Some(a), tail)
            }
            other => (other, Vec::new()),
        };
        let recent = Recent {
            segment: found_active.as_ref().map(|a| a.segment.first_lsn),
            start: found_active.as_ref().map_or(0, |a| a.offset),
            bytes: Vec::new(),
        };
        let active = found_active.map(|a| Active {
            seg: seg_ref(a.segment),
            file: a.file,
            salt: a.salt,
            offset: a.offset,
        });
        let inner = Arc::new(Inner {
            disk,
            dir,
            opts,
            state: Mutex::new(State {
                next_lsn: next,
                queue: Queue::default(),
                queue_first: next,
                queue_since: None,
                queued_bytes: 0,
                committing: false,
                written_end: next,
                durable_end: next,
                sync_wanted: false,
                last_sync: Instant::now(),
                poison: None,
                closed: false,
                first_lsn: report.first_lsn,
                sealed,
                active,
                prepared: None,
                preparing: false,
                prepared_count: 0,
            }),
            progress: Notify::new(),
            space: Notify::new(),
            counters: Counters::default(),
            write_buf: Mutex::new(None),
            tail: Mutex::new(tail),
            recent: Mutex::new(recent),
            ticker: Mutex::new(None),
        });
        let wal = Self { inner };
        if wal.inner.lock().active.is_none() {
            // An empty directory: the first segment.
            let active = wal.inner.create_segment(next).await?;
            *wal.inner.recent_lock() = Recent {
                segment: Some(next),
                start: active.offset,
                bytes: Vec::new(),
            };
            wal.inner.lock().active = Some(active);
        }
        Inner::start_preparing(&wal.inner);
        if let Durability::Periodic(every) = wal.inner.opts.durability {
            Inner::start_ticker(&wal.inner, every)?;
        }
        Ok((wal, report))
    }

    /// Appends one record and returns its LSN once the record counts as done: durable in
    /// [`Durability::Sync`], queued in [`Durability::None`].
    ///
    /// # Errors
    ///
    /// [`WalError::RecordTooLarge`], [`WalError::Poisoned`], [`WalError::Closed`].
    pub async fn append(&self, record: &[u8]) -> Result<Lsn> {
        let lsn = self.append_nowait(record).await?;
        if self.inner.opts.durability == Durability::Sync {
            self.wait_durable(lsn).await?;
        }
        Ok(lsn)
    }

    /// Appends records as one batch with consecutive LSNs; returns the last LSN, once done as
    /// for [`append`](Self::append). An empty batch returns the last LSN assigned so far (0 if
    /// none).
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append); a record that is too large fails the whole batch before any
    /// record is queued.
    pub async fn append_batch(&self, records: &[&[u8]]) -> Result<Lsn> {
        for r in records {
            self.check_size(r.len())?;
        }
        let mut last = None;
        for r in records {
            last = Some(self.append_nowait(r).await?);
        }
        match last {
            Some(lsn) => {
                if self.inner.opts.durability == Durability::Sync {
                    self.wait_durable(lsn).await?;
                }
                Ok(lsn)
            }
            None => Ok(self.inner.lock().next_lsn - 1),
        }
    }

    /// Queues a record and returns its LSN without waiting for it to be written; waits only
    /// while the queue is full (`queued_bytes_max`). Use [`wait_durable`](Self::wait_durable)
    /// to learn when it is durable.
    ///
    /// # Errors
    ///
    /// [`WalError::RecordTooLarge`], [`WalError::Poisoned`], [`WalError::Closed`].
    pub async fn append_nowait(&self, record: &[u8]) -> Result<Lsn> {
        self.check_size(record.len())?;
        let frame = frame_len(record.len());
        let inner = &self.inner;
        // The fast path: room in the queue, no waiting machinery.
        if let Some(lsn) = self.try_enqueue(record, frame)? {
            return Ok(lsn);
        }
        loop {
            let mut space = pin!(inner.space.notified());
            space.as_mut().enable();
            if let Some(lsn) = self.try_enqueue(record, frame)? {
                return Ok(lsn);
            }
            space.await;
        }
    }

    /// Queues the record if there is room; starts the committer if it is idle.
    fn try_enqueue(&self, record: &[u8], frame: usize) -> Result<Option<Lsn>> {
        let inner = &self.inner;
        let mut st = inner.lock();
        st.usable()?;
        if st.queued_bytes != 0 && st.queued_bytes + frame > inner.opts.queued_bytes_max {
            return Ok(None);
        }
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        if st.queue.is_empty() {
            st.queue_since = Some(Instant::now());
        }
        st.queue.push(lsn, record);
        st.queued_bytes += frame;
        let start = !st.committing;
        st.committing = true;
        drop(st);
        inner.counters.appends.fetch_add(1, Ordering::Relaxed);
        if start {
            Inner::spawn_committer(inner)?;
        }
        Ok(Some(lsn))
    }

    /// Waits until every record up to `lsn` is durable.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`] if the log failed before `lsn` became durable;
    /// [`WalError::NotAppended`] for an LSN not handed out yet.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        let inner = &self.inner;
        loop {
            let mut progress = pin!(inner.progress.notified());
            progress.as_mut().enable();
            {
                let st = inner.lock();
                if st.durable_end > lsn {
                    return Ok(());
                }
                if let Some(cause) = &st.poison {
                    return Err(WalError::Poisoned {
                        cause: Arc::clone(cause),
                    });
                }
                if lsn >= st.next_lsn {
                    return Err(WalError::NotAppended {
                        lsn,
                        next: st.next_lsn,
                    });
                }
            }
            progress.await;
        }
    }

    /// Makes every record appended so far durable; returns the last such LSN (0 if none).
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`], [`WalError::Closed`].
    pub async fn sync(&self) -> Result<Lsn> {
        let last = {
            let mut st = self.inner.lock();
            st.usable()?;
            let last = st.next_lsn - 1;
            if st.durable_end > last {
                return Ok(last);
            }
            st.sync_wanted = true;
            let start = !st.committing;
            st.committing = true;
            drop(st);
            if start {
                Inner::spawn_committer(&self.inner)?;
            }
            last
        };
        self.wait_durable(last).await?;
        Ok(last)
    }

    /// A reader of the records from `from` on (see [`Reader`]).
    pub fn reader(&self, from: Lsn) -> Reader<D> {
        Reader::new(Arc::clone(&self.inner), from)
    }

    /// Removes every sealed segment whose records all come before `lsn`; the segment holding
    /// `lsn` and the one being written stay. Returns the first LSN still in the log.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if a removal fails (the segments removed before it stay removed; the log
    /// stays consistent), [`WalError::Poisoned`], [`WalError::Closed`].
    pub async fn truncate_before(&self, lsn: Lsn) -> Result<Lsn> {
        let (doomed, first) = {
            let mut st = self.inner.lock();
            st.usable()?;
            let mut n = 0;
            while n < st.sealed.len() {
                let next_first = st
                    .sealed
                    .get(n + 1)
                    .or(st.active.as_ref().map(|a| &a.seg))
                    .map_or(Lsn::MAX, |s| s.first_lsn);
                if next_first > lsn {
                    break;
                }
                n += 1;
            }
            let doomed: Vec<SegmentRef> = st.sealed.drain(..n).collect();
            if !doomed.is_empty() {
                st.first_lsn = st
                    .sealed
                    .first()
                    .or(st.active.as_ref().map(|a| &a.seg))
                    .map_or(st.next_lsn, |s| s.first_lsn);
            }
            (doomed, st.first_lsn)
        };
        if doomed.is_empty() {
            return Ok(first);
        }
        for seg in &doomed {
            self.inner.disk.remove_file(&seg.path).await?;
        }
        self.inner.disk.sync_dir(&self.inner.dir).await?;
        Ok(first)
    }

    /// Makes everything appended durable, waits for the committer, and closes the files. Later
    /// calls on any clone fail with [`WalError::Closed`].
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`] if the final sync cannot be done.
    pub async fn close(self) -> Result<()> {
        let synced = self.sync().await;
        let inner = &self.inner;
        loop {
            let mut progress = pin!(inner.progress.notified());
            progress.as_mut().enable();
            {
                let mut st = inner.lock();
                if !st.committing {
                    st.closed = true;
                    break;
                }
            }
            progress.await;
        }
        // Let a segment being prepared finish, then drop it: it was never part of the log.
        loop {
            let mut progress = pin!(inner.progress.notified());
            progress.as_mut().enable();
            if !inner.lock().preparing {
                break;
            }
            progress.await;
        }
        let (file, prepared) = {
            let mut st = inner.lock();
            (st.active.as_ref().map(|a| a.file), st.prepared.take())
        };
        if let Some(t) = inner
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.unpark();
        }
        inner.progress.notify_waiters();
        inner.space.notify_waiters();
        if let Some(p) = prepared {
            // Never part of the log: a failure to drop it is not the log's (the next open
            // removes it).
            let dropped = match inner.disk.close(p.file).await {
                Ok(()) => inner.disk.remove_file(&p.path).await,
                Err(e) => Err(e),
            };
            if let Err(e) = dropped {
                tracing::warn!(error = %e, "could not remove the prepared WAL segment");
            }
        }
        if let Some(f) = file {
            inner.disk.close(f).await?;
        }
        synced.map(drop)
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.inner.lock().next_lsn
    }

    /// Every record below this LSN is durable.
    pub fn durable_end(&self) -> Lsn {
        self.inner.lock().durable_end
    }

    /// Whether segments are written with `O_DIRECT` ([`WalOptions::direct_io`], and the
    /// filesystem accepted it at open).
    pub fn is_direct_io(&self) -> bool {
        self.inner.opts.direct_io
    }

    /// The first LSN still in the log.
    pub fn first_lsn(&self) -> Lsn {
        self.inner.lock().first_lsn
    }

    /// Counters and distributions since the log was opened.
    pub fn stats(&self) -> WalStats {
        let c = &self.inner.counters;
        let h = self.inner.histograms();
        WalStats {
            appends: c.appends.load(Ordering::Relaxed),
            groups: c.groups.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            rotations: c.rotations.load(Ordering::Relaxed),
            group_records: Summary::of(&h.group_records, 1.0),
            commit_us: Summary::of(&h.commit_ns, 1000.0),
            sync_us: Summary::of(&h.sync_ns, 1000.0),
        }
    }

    fn check_size(&self, len: usize) -> Result<()> {
        let max = self.inner.opts.record_max;
        if len > max {
            return Err(WalError::RecordTooLarge { len, max });
        }
        Ok(())
    }
}

fn seg_ref(s: FoundSegment) -> SegmentRef {
    SegmentRef {
        first_lsn: s.first_lsn,
        path: s.path,
    }
}

impl State {
    fn usable(&self) -> Result<()> {
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
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is completed before the lock is released; a panic elsewhere leaves a
        // consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What readers may see: below this LSN every record is written, and durable in `Sync`.
    pub(crate) fn visible_end(&self) -> Lsn {
        let st = self.lock();
        match self.opts.durability {
            Durability::Sync => st.durable_end,
            Durability::None | Durability::Periodic(_) => st.written_end,
        }
    }

    /// The segments, oldest first, and the first LSN still in the log.
    pub(crate) fn segments(&self) -> (Vec<SegmentRef>, Lsn) {
        let st = self.lock();
        let mut v = st.sealed.clone();
        if let Some(a) = &st.active {
            v.push(a.seg.clone());
        }
        (v, st.first_lsn)
    }

    fn spawn_committer(inner: &Arc<Self>) -> Result<()> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(Self::commit_loop(CommitterGuard::new(inner)));
                Ok(())
            }
            Err(_) => {
                let cause = Arc::new(diskio::Error::Unsupported {
                    reason: "the WAL must be called from within a Tokio runtime".to_owned(),
                });
                inner.poison_with(cause.clone());
                Err(WalError::Poisoned { cause })
            }
        }
    }

    fn poison_with(&self, cause: Arc<diskio::Error>) {
        {
            let mut st = self.lock();
            if st.poison.is_none() {
                tracing::error!(error = %cause, dir = %self.dir.display(), "WAL poisoned");
                st.poison = Some(cause);
            }
            st.committing = false;
        }
        self.progress.notify_waiters();
        self.space.notify_waiters();
    }

    /// The committer: takes groups from the queue and writes (and syncs) them, one after the
    /// other, until the queue is empty.
    async fn commit_loop(mut guard: CommitterGuard<D>) {
        let inner = Arc::clone(&guard.inner);
        while let Some(work) = inner.next_work() {
            let res = match work {
                Work::Write {
                    chunks,
                    first,
                    records,
                    since,
                    file,
                    salt,
                    offset,
                } => {
                    let span = tracing::debug_span!("wal_group", first, records, offset);
                    inner
                        .write_group(chunks, (first, records), since, file, salt, offset)
                        .instrument(span)
                        .await
                }
                Work::Rotate => {
                    let span = tracing::debug_span!("wal_rotate", dir = %inner.dir.display());
                    Inner::rotate(&inner).instrument(span).await
                }
                Work::Sync(file) => inner.sync_active(file).await,
            };
            if let Err(cause) = res {
                inner.poison_with(Arc::new(cause));
                break;
            }
        }
        guard.finished = true;
    }

    /// Decides the committer's next step under the lock; `None` when there is nothing to do
    /// (and the committer is marked stopped in the same critical section).
    fn next_work(&self) -> Option<Work> {
        let mut st = self.lock();
        if st.poison.is_some() {
            st.committing = false;
            return None;
        }
        let Some(active) = st.active.as_ref() else {
            st.committing = false;
            return None;
        };
        let (file, salt, offset) = (active.file, active.salt, active.offset);
        if let Durability::Periodic(every) = self.opts.durability {
            if st.durable_end < st.written_end && st.last_sync.elapsed() >= every {
                return Some(Work::Sync(file));
            }
        }
        if st.queue.is_empty() {
            if st.sync_wanted && st.durable_end < st.written_end {
                return Some(Work::Sync(file));
            }
            st.sync_wanted = false;
            st.committing = false;
            drop(st);
            self.progress.notify_waiters();
            return None;
        }
        let room = self.opts.segment_bytes.saturating_sub(offset);
        let limit = (self.opts.group_bytes_max as u64).min(room) as usize;
        let chunks = st.queue.take(limit);
        if chunks.is_empty() {
            // The first frame does not fit in this segment.
            return Some(Work::Rotate);
        }
        let records: u64 = chunks.iter().map(|c| c.records).sum();
        let first = st.queue_first;
        st.queue_first += records;
        // What stays queued waited at least since now (a close enough bound for the next group).
        let since = if st.queue.is_empty() {
            st.queue_since.take()
        } else {
            st.queue_since.replace(Instant::now())
        };
        Some(Work::Write {
            chunks,
            first,
            records,
            since,
            file,
            salt,
            offset,
        })
    }

    async fn write_group(
        &self,
        mut chunks: Vec<Chunk>,
        (first, records): (Lsn, u64),
        since: Option<Instant>,
        file: FileId,
        salt: u64,
        offset: u64,
    ) -> diskio::Result<()> {
        for c in &mut chunks {
            seal_frames(&mut c.bytes, first, salt);
        }
        // With `direct_io` the write starts at the last block boundary, with the bytes already
        // there, and is padded with zeros to whole blocks.
        let direct = self.opts.direct_io;
        let prefix = if direct {
            std::mem::take(&mut *self.tail_lock())
        } else {
            Vec::new()
        };
        let buf = self.write_buf(&prefix, &chunks)?;
        let len: usize = chunks.iter().map(|c| c.bytes.len()).sum();
        let written = buf.len();
        let prefix_len = prefix.len();
        let at = offset - prefix_len as u64;
        // The new tail reuses the old one's memory.
        let mut next_tail = prefix;
        next_tail.clear();
        if direct {
            let end = prefix_len + len;
            let block_start = end - end % DIRECT_BLOCK as usize;
            next_tail.extend_from_slice(&buf[block_start..end]);
        }
        {
            let mut st = self.lock();
            for c in chunks {
                st.queue.recycle(c.bytes);
            }
        }
        let synced = self.opts.durability == Durability::Sync;
        let started = Instant::now();
        let back = if synced {
            let (res, mut back) = self
                .disk
                .write_sync_at(file, vec![buf], at, SyncKind::Data)
                .await;
            res?;
            self.note_sync(started);
            back.pop()
        } else {
            let (res, back) = self.disk.write_all_at(file, buf, at).await;
            res?;
            Some(back)
        };
        if direct {
            *self.tail_lock() = next_tail;
            let mut recent = self.recent_lock();
            let group = back
                .as_ref()
                .and_then(|b| b.get(prefix_len..prefix_len + len));
            match group {
                Some(bytes) => {
                    recent.bytes.extend_from_slice(bytes);
                    recent.trim();
                }
                None => {
                    // The buffer did not come back: hold nothing, readers go to the file.
                    recent.start = offset + len as u64;
                    recent.bytes.clear();
                }
            }
        }
        if let Some(back) = back {
            *self
                .write_buf
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(back);
        }
        self.counters.groups.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(written as u64, Ordering::Relaxed);
        {
            let mut h = self.histograms();
            let _ = h.group_records.record(records.max(1));
            if let Some(since) = since {
                let _ = h.commit_ns.record(nanos(since).max(1));
            }
        }
        {
            let mut st = self.lock();
            if let Some(a) = st.active.as_mut() {
                a.offset += len as u64;
            }
            st.written_end = first + records;
            if synced {
                st.durable_end = st.written_end;
                st.last_sync = Instant::now();
            }
            st.queued_bytes -= len;
        }
        self.progress.notify_waiters();
        self.space.notify_waiters();
        Ok(())
    }

    /// `prefix` and the group's bytes in the committer's aligned buffer, reused from group to
    /// group (grown when a group is larger than any before); with `direct_io`, padded with
    /// zeros to whole blocks.
    fn write_buf(&self, prefix: &[u8], chunks: &[Chunk]) -> diskio::Result<AlignedBuf> {
        let data = prefix.len() + chunks.iter().map(|c| c.bytes.len()).sum::<usize>();
        let len = if self.opts.direct_io {
            data.next_multiple_of(DIRECT_BLOCK as usize)
        } else {
            data
        };
        let kept = self
            .write_buf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut buf = match kept {
            Some(b) if b.capacity() >= len => b,
            _ => AlignedBuf::with_capacity(
                len.next_power_of_two().max(64 << 10),
                self.disk.alignment(),
            )?,
        };
        buf.clear();
        buf.extend_from_slice(prefix)?;
        for c in chunks {
            buf.extend_from_slice(&c.bytes)?;
        }
        if len > data {
            buf.resize(len)?;
            buf[data..].fill(0);
        }
        Ok(buf)
    }

    fn tail_lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recent_lock(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies into `out` the bytes of segment `segment` from file offset `at` that are held in
    /// memory (`direct_io` only), at most `max` of them; returns how many.
    pub(crate) fn read_recent(
        &self,
        segment: Lsn,
        at: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        let recent = self.recent_lock();
        if recent.segment != Some(segment) || at < recent.start {
            return 0;
        }
        let from = (at - recent.start) as usize;
        let Some(held) = recent.bytes.get(from..) else {
            return 0;
        };
        let n = held.len().min(max);
        out.extend_from_slice(&held[..n]);
        n
    }

    fn note_sync(&self, started: Instant) {
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        let _ = self.histograms().sync_ns.record(nanos(started).max(1));
    }

    fn histograms(&self) -> MutexGuard<'_, Histograms> {
        self.counters
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn sync_active(&self, file: FileId) -> diskio::Result<()> {
        let target = self.lock().written_end;
        let started = Instant::now();
        self.disk.fsync(file, SyncKind::Data).await?;
        self.note_sync(started);
        {
            let mut st = self.lock();
            st.durable_end = st.durable_end.max(target);
            st.last_sync = Instant::now();
        }
        self.progress.notify_waiters();
        Ok(())
    }

    /// Seals the active segment (synced, closed) and starts a new one at the next queued LSN,
    /// from the file prepared in the background when there is one.
    async fn rotate(inner: &Arc<Self>) -> diskio::Result<()> {
        let (old_file, first) = {
            let st = inner.lock();
            match &st.active {
                Some(a) => (a.file, st.queue_first),
                None => return Ok(()),
            }
        };
        // Every record of the old segment is durable before any record goes to the new one, so
        // recovery can trust that a sealed segment's end is final.
        let unsynced = {
            let st = inner.lock();
            st.durable_end < st.written_end
        };
        if unsynced {
            inner.sync_active(old_file).await?;
        }
        let fresh = match inner.take_prepared().await {
            Some(p) => inner.publish(p, first).await?,
            None => inner.create_segment(first).await?,
        };
        {
            let mut st = inner.lock();
            if let Some(old) = st.active.replace(fresh) {
                st.sealed.push(old.seg);
            }
        }
        // The new segment's records start at a block boundary (after its header).
        inner.tail_lock().clear();
        *inner.recent_lock() = Recent {
            segment: Some(first),
            start: HEADER_LEN as u64,
            bytes: Vec::new(),
        };
        inner.counters.rotations.fetch_add(1, Ordering::Relaxed);
        inner.disk.close(old_file).await?;
        Self::start_preparing(inner);
        Ok(())
    }

    /// Starts the `Periodic` timer: a thread that asks for a sync every `every` while records
    /// wait to be durable and the committer has not synced meanwhile.
    fn start_ticker(inner: &Arc<Self>, every: std::time::Duration) -> Result<()> {
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
                        if st.durable_end >= st.next_lsn || st.last_sync.elapsed() < every {
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

    /// Starts preparing the next segment in the background, unless one is ready or under way
    /// (or no Tokio runtime is at hand: rotation then creates the segment itself).
    fn start_preparing(inner: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let n = {
            let mut st = inner.lock();
            if st.preparing || st.prepared.is_some() || st.closed || st.poison.is_some() {
                return;
            }
            st.preparing = true;
            st.prepared_count += 1;
            st.prepared_count
        };
        let inner = Arc::clone(inner);
        handle.spawn(async move {
            let made = inner.prepare_file(n).await;
            {
                let mut st = inner.lock();
                st.preparing = false;
                match made {
                    Ok(p) => st.prepared = Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "preparing the next WAL segment failed; rotation will create it");
                    }
                }
            }
            inner.progress.notify_waiters();
        });
    }

    /// The prepared segment file, waiting for it if it is being made.
    async fn take_prepared(&self) -> Option<Prepared> {
        loop {
            let mut progress = pin!(self.progress.notified());
            progress.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some(p) = st.prepared.take() {
                    return Some(p);
                }
                if !st.preparing {
                    return None;
                }
            }
            progress.await;
        }
    }

    /// Creates a segment-sized file under a temporary name, filled (zeros, or preallocated) and
    /// synced, so that later group commits into it have no metadata to journal.
    async fn prepare_file(&self, n: u64) -> diskio::Result<Prepared> {
        let path = self.dir.join(format!("prepared-{n}{TEMP_SUFFIX}"));
        let file = self
            .disk
            .open(
                &path,
                &OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .direct(self.opts.direct_io),
            )
            .await?;
        if let Err(e) = check_direct(&self.disk, file) {
            let _ = self.disk.close(file).await;
            let _ = self.disk.remove_file(&path).await;
            return Err(e);
        }
        let filled = async {
            self.fill(file).await?;
            self.disk.fsync(file, SyncKind::All).await
        }
        .await;
        if let Err(e) = filled {
            let _ = self.disk.close(file).await;
            let _ = self.disk.remove_file(&path).await;
            return Err(e);
        }
        Ok(Prepared { file, path })
    }

    /// Writes the header of a prepared file and gives it its segment name (synced, directory
    /// synced): from here on it is part of the log.
    async fn publish(&self, p: Prepared, first: Lsn) -> diskio::Result<Active> {
        let salt = self.write_header(p.file, first).await?;
        let path = self.dir.join(segment_name(first));
        self.disk.rename(&p.path, &path).await?;
        self.disk.sync_dir(&self.dir).await?;
        Ok(Active {
            seg: SegmentRef {
                first_lsn: first,
                path,
            },
            file: p.file,
            salt,
            offset: HEADER_LEN as u64,
        })
    }

    /// Fills a new segment file: zeros over the whole size (`zero_fill`, `Sync` durability), else
    /// preallocation.
    async fn fill(&self, file: FileId) -> diskio::Result<()> {
        let disk = &self.disk;
        let size = self.opts.segment_bytes;
        // Written blocks make a per-group sync cheaper; without one (None, Periodic) zeros would
        // only double what goes to the disk.
        if !self.opts.zero_fill || self.opts.durability != Durability::Sync {
            return disk.preallocate(file, 0, size).await;
        }
        let chunk = (1u64 << 20).min(size) as usize;
        let mut at = 0u64;
        while at < size {
            let n = chunk.min((size - at) as usize);
            let mut zeros = disk.alloc(n)?;
            zeros.clear();
            zeros.resize(n)?;
            zeros.fill(0);
            let (res, _) = disk.write_all_at(file, zeros, at).await;
            res?;
            at += n as u64;
        }
        Ok(())
    }

    /// Writes (and syncs) the header of the segment starting at `first`; returns its salt.
    async fn write_header(&self, file: FileId, first: Lsn) -> diskio::Result<u64> {
        let salt = random_salt(first);
        let mut header = [0u8; HEADER_LEN];
        SegmentHeader {
            first_lsn: first,
            salt,
        }
        .encode(&mut header);
        let buf = AlignedBuf::from_slice(&header, self.disk.alignment())?;
        let (res, _) = self
            .disk
            .write_sync_at(file, vec![buf], 0, SyncKind::Data)
            .await;
        res?;
        Ok(salt)
    }

    /// Creates, fills, syncs and publishes (directory sync) the segment whose first LSN is
    /// `first`, on the caller's path (the first segment, or when none was prepared).
    async fn create_segment(&self, first: Lsn) -> diskio::Result<Active> {
        let path = self.dir.join(segment_name(first));
        let disk = &self.disk;
        let file = disk
            .open(
                &path,
                &OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .direct(self.opts.direct_io),
            )
            .await?;
        check_direct(disk, file)?;
        self.fill(file).await?;
        let salt = self.write_header(file, first).await?;
        disk.fsync(file, SyncKind::All).await?;
        disk.sync_dir(&self.dir).await?;
        Ok(Active {
            seg: SegmentRef {
                first_lsn: first,
                path,
            },
            file,
            salt,
            offset: HEADER_LEN as u64,
        })
    }
}

/// The block `direct_io` writes in: the page size, and the physical sector of common devices.
pub(crate) const DIRECT_BLOCK: u64 = 4096;

/// Refuses a direct file whose `O_DIRECT` alignment is coarser than [`DIRECT_BLOCK`].
fn check_direct<D: DiskIo>(disk: &D, file: FileId) -> diskio::Result<()> {
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
async fn direct_works<D: DiskIo>(
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
async fn reopen_direct<D: DiskIo>(
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

fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A salt that differs between segments and between runs: the time, the process, the LSN.
fn random_salt(first: Lsn) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = now ^ (u64::from(std::process::id()) << 32) ^ first.rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
