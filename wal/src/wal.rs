//! The handle: opening the log, appending, waiting for durability, syncing, reading, retention
//! and closing.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::Poll;
use std::time::Instant;

use diskio::DiskIo;

use crate::committer::LedCommitter;
use crate::direct::{DirectCache, direct_works, reopen_direct};
use crate::error::{Result, WalError};
use crate::format::frame_len;
use crate::options::{Durability, WalOptions};
use crate::reader::Reader;
use crate::recovery::{RecoveryReport, recover};
use crate::state::{Active, Inner, SegmentRef, Segments, State};
use crate::{Lsn, WalStats};

/// A segmented, checksummed, group-commit write-ahead log on any [`DiskIo`] backend.
///
/// Cloning is cheap and every clone appends to the same log; futures are `Send`. Appends from
/// any number of tasks are gathered into groups: while one group is being written and synced,
/// the next one gathers, so the group grows with the load and no timer is needed. The committer
/// exists while there is work: a durable append that finds it idle runs it inside its own
/// future until its record is durable (no spawn, no hand-off: see [`append`](Self::append));
/// otherwise, and for the work left after that, it is a Tokio task spawned on the runtime of
/// the call (so calls must come from within a Tokio runtime).
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
            .field("durable_end", &st.marks.durable_end)
            .field("poisoned", &st.poison.is_some())
            .finish_non_exhaustive()
    }
}

impl<D: DiskIo> Wal<D> {
    /// Opens (or creates) the log in `dir` on `disk`: recovers what is there (see
    /// [`RecoveryReport`]) and makes the log ready to append.
    ///
    /// With [`WalOptions::direct_io`] (the default), a directory whose filesystem refuses
    /// `O_DIRECT` is written through the page cache instead, with a `tracing` warning;
    /// [`is_direct_io`](Self::is_direct_io) tells which.
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
        let (found_active, tail) = match found.active {
            Some(a) if opts.direct_io => {
                let (a, tail) = reopen_direct(&disk, a).await?;
                (Some(a), tail)
            }
            other => (other, Vec::new()),
        };
        let direct = DirectCache::new(
            tail,
            found_active.as_ref().map(|a| a.segment.first_lsn),
            found_active.as_ref().map_or(0, |a| a.offset),
        );
        let segments = Segments {
            first_lsn: report.first_lsn,
            sealed: found.sealed,
            active: found_active.map(|a| Active {
                seg: SegmentRef::found(a.segment, a.salt),
                file: a.file,
                offset: a.offset,
            }),
            prepared: None,
            preparing: false,
            prepared_count: 0,
            rush: false,
        };
        let state = State::new(next, segments);
        let wal = Self {
            inner: Arc::new(Inner::new(disk, dir, opts, state, direct)),
        };
        if wal.inner.lock().segments.active.is_none() {
            // An empty directory: the first segment.
            let active = wal.inner.create_segment(next).await?;
            wal.inner.direct.restart(next, active.offset);
            wal.inner.lock().segments.active = Some(active);
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
    ///
    /// In `Sync` mode, an append that finds the log idle commits its group itself, inside its
    /// own future: no task is spawned and the disk's completion wakes the appender directly,
    /// which is what brings a lone writer to the disk's floor. Appends that come meanwhile join
    /// the next group; once this append's record is durable, any work left goes on in a spawned
    /// task (as it does if this future is dropped mid-commit: nothing is lost).
    pub async fn append(&self, record: &[u8]) -> Result<Lsn> {
        let lead = self.inner.opts.durability == Durability::Sync;
        let (lsn, started) = self.enqueue(record, lead).await?;
        if lead {
            self.wait_leading(lsn, started).await?;
        } else if started {
            Inner::spawn_committer(&self.inner)?;
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
        let Some((last, rest)) = records.split_last() else {
            return Ok(self.inner.lock().next_lsn - 1);
        };
        for r in rest {
            // A committer started here must run at once: a later record may wait for room.
            self.append_nowait(r).await?;
        }
        self.append(last).await
    }

    /// Queues a record and returns its LSN without waiting for it to be written; waits only
    /// while the queue is full (`queued_bytes_max`). Use [`wait_durable`](Self::wait_durable)
    /// to learn when it is durable.
    ///
    /// # Errors
    ///
    /// [`WalError::RecordTooLarge`], [`WalError::Poisoned`], [`WalError::Closed`].
    pub async fn append_nowait(&self, record: &[u8]) -> Result<Lsn> {
        let (lsn, started) = self.enqueue(record, false).await?;
        if started {
            Inner::spawn_committer(&self.inner)?;
        }
        Ok(lsn)
    }

    /// Queues the record, waiting while the queue is full; returns its LSN and whether the
    /// committer was idle, in which case the caller must run one (it is marked running, and
    /// marked led if the caller will `lead` it in its own future).
    async fn enqueue(&self, record: &[u8], lead: bool) -> Result<(Lsn, bool)> {
        self.check_size(record.len())?;
        let frame = frame_len(record.len());
        // The fast path: room in the queue, no waiting machinery.
        if let Some(queued) = self.try_enqueue(record, frame, lead)? {
            return Ok(queued);
        }
        self.inner
            .space
            .until(|| self.try_enqueue(record, frame, lead).transpose())
            .await
    }

    /// Waits until `lsn` is durable, running the committer inside this future first if the
    /// caller `started` it ([`LedCommitter`]).
    ///
    /// While it leads, only its own committer moves the durable watermark, and every wait of
    /// that committer wakes this future: so it looks at the watermark after each step of the
    /// committer rather than registering for the log's wake-ups.
    async fn wait_leading(&self, lsn: Lsn, started: bool) -> Result<()> {
        if !started {
            return self.wait_durable(lsn).await;
        }
        let mut committer = LedCommitter::new(&self.inner);
        let led = std::future::poll_fn(|cx| {
            let running = committer.poll(cx);
            match durable_outcome(&self.inner.lock(), lsn) {
                Some(outcome) => Poll::Ready(Some(outcome)),
                None if running => Poll::Pending,
                // The committer stopped short of `lsn` (it cannot, but waiting is the safe
                // answer).
                None => Poll::Ready(None),
            }
        })
        .await;
        // Hands any work left to a task before waiting below: kept here, the committer would no
        // longer be polled, and the wait would be for a commit that never comes.
        drop(committer);
        match led {
            Some(outcome) => outcome,
            None => self.wait_durable(lsn).await,
        }
    }

    /// Queues the record if there is room: its LSN, and whether the committer was idle (it is
    /// then marked running, and led if `lead`, and the caller must start it).
    fn try_enqueue(&self, record: &[u8], frame: usize, lead: bool) -> Result<Option<(Lsn, bool)>> {
        let inner = &self.inner;
        let mut st = inner.lock();
        st.usable()?;
        if st.rewriting {
            return Ok(None);
        }
        let pending = &st.pending;
        if pending.bytes != 0 && pending.bytes + frame > inner.opts.queued_bytes_max {
            return Ok(None);
        }
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        let pending = &mut st.pending;
        if pending.queue.is_empty() {
            pending.since = Some(Instant::now());
        }
        pending.queue.push(lsn, record);
        pending.bytes += frame;
        let start = !st.committing;
        if start {
            st.committing = true;
            st.led = lead;
        }
        drop(st);
        inner.counters.appends.fetch_add(1, Ordering::Relaxed);
        Ok(Some((lsn, start)))
    }

    /// Waits until every record up to `lsn` is durable.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`] if the log failed before `lsn` became durable;
    /// [`WalError::NotAppended`] for an LSN not handed out yet.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        let mut outcome = Ok(());
        self.inner
            .wait_for(|st| match durable_outcome(st, lsn) {
                Some(o) => {
                    outcome = o;
                    true
                }
                None => false,
            })
            .await;
        outcome
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
            if st.marks.durable_end > last {
                return Ok(last);
            }
            st.sync_wanted = true;
            let start = !st.committing;
            if start {
                st.committing = true;
                st.led = true;
            }
            (last, start)
        };
        let (last, started) = last;
        self.wait_leading(last, started).await?;
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
        self.inner.remove_before(lsn).await
    }

    /// Drops every record from `lsn` on: the next append gets `lsn`. For a log whose tail turned
    /// out to be wrong (a replica whose uncommitted entries conflict with its leader's).
    ///
    /// Appends wait while it runs; records appended before the call are made durable first,
    /// then dropped with the rest if at or after `lsn`. Once it returns, no dropped record comes
    /// back, after a crash either; a crash during the call leaves the log as it was or with a
    /// part of the suffix dropped (always contiguous). Readers made before the call may still
    /// hand out records they had read: make new ones.
    ///
    /// # Errors
    ///
    /// [`WalError::NotAppended`] if `lsn` is past the next LSN; [`WalError::Truncated`] if it
    /// is before the first LSN still in the log; [`WalError::Poisoned`] (and the log poisoned)
    /// if a write, sync or removal fails part way; [`WalError::Closed`].
    pub async fn truncate_from(&self, lsn: Lsn) -> Result<()> {
        Inner::truncate_from(&self.inner, lsn).await
    }

    /// Drops every record and continues the log at `lsn`: the next append gets `lsn`, and
    /// [`first_lsn`](Self::first_lsn) is `lsn`. For a log whose records up to `lsn - 1` are
    /// kept elsewhere (a snapshot installed on a replica).
    ///
    /// Atomic across a crash: after it, the log is the old one or the empty one at `lsn`,
    /// never a mix. Appends wait while it runs.
    ///
    /// # Errors
    ///
    /// [`WalError::SkipBackwards`] if `lsn` is below the next LSN (use
    /// [`truncate_from`](Self::truncate_from) to go back); [`WalError::Poisoned`] (and the log
    /// poisoned) if a file operation fails part way; [`WalError::Closed`].
    pub async fn skip_to(&self, lsn: Lsn) -> Result<()> {
        Inner::skip_to(&self.inner, lsn).await
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
        inner
            .wait_for(|st| {
                if !st.committing {
                    st.closed = true;
                }
                !st.committing
            })
            .await;
        // Let a segment being prepared finish (its fill cut short), then drop it: it was never
        // part of the log.
        inner.lock().segments.rush = true;
        inner.wait_for(|st| !st.segments.preparing).await;
        let (file, prepared) = {
            let mut st = inner.lock();
            let segs = &mut st.segments;
            (segs.active.as_ref().map(|a| a.file), segs.prepared.take())
        };
        if let Some(t) = inner
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.unpark();
        }
        inner.progress.wake();
        inner.space.wake();
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

    /// The failure that poisoned the log, if one did (a health check's question; every call
    /// that needs the disk answers [`WalError::Poisoned`] with it).
    pub fn poisoned(&self) -> Option<Arc<diskio::Error>> {
        self.inner.lock().poison.clone()
    }

    /// Every record below this LSN is durable.
    pub fn durable_end(&self) -> Lsn {
        self.inner.lock().marks.durable_end
    }

    /// Whether segments are written with `O_DIRECT` ([`WalOptions::direct_io`], and the
    /// filesystem accepted it at open).
    pub fn is_direct_io(&self) -> bool {
        self.inner.opts.direct_io
    }

    /// The first LSN still in the log.
    pub fn first_lsn(&self) -> Lsn {
        self.inner.lock().segments.first_lsn
    }

    /// Counters and distributions since the log was opened.
    pub fn stats(&self) -> WalStats {
        self.inner.counters.snapshot()
    }

    fn check_size(&self, len: usize) -> Result<()> {
        let max = self.inner.opts.record_max;
        if len > max {
            return Err(WalError::RecordTooLarge { len, max });
        }
        Ok(())
    }
}

/// Whether waiting for `lsn` to be durable is over, and how: `None` while it must go on.
fn durable_outcome(st: &State, lsn: Lsn) -> Option<Result<()>> {
    if st.marks.durable_end > lsn {
        return Some(Ok(()));
    }
    if let Some(cause) = &st.poison {
        return Some(Err(WalError::Poisoned {
            cause: Arc::clone(cause),
        }));
    }
    if lsn >= st.next_lsn {
        return Some(Err(WalError::NotAppended {
            lsn,
            next: st.next_lsn,
        }));
    }
    None
}
