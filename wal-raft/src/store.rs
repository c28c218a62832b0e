//! The log store: openraft's `RaftLogStorage` and `RaftLogReader` on a [`Wal`].

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use diskio::DiskIo;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig,
    StorageError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use wal::{Lsn, Wal, WalOptions};

use crate::error::{Error, refused, storage};
use crate::meta::{self, Meta};

/// The subdirectory that holds the log's segments.
const LOG_DIR: &str = "log";

/// An openraft log store on diskio's group-commit [`Wal`].
///
/// Raft index `i` is the record at LSN `i + 1`. `append` queues the entries and returns at
/// once, with the entries readable; the flush callback fires once the group commit that
/// carries them is durable, so entries appended by many calls share one write and one sync.
/// The vote and the last purged log id live beside the log in a file replaced atomically.
///
/// Cloning is cheap; clones share the log.
pub struct LogStore<C: RaftTypeConfig, D: DiskIo> {
    wal: Wal<D>,
    disk: D,
    dir: PathBuf,
    shared: Arc<Mutex<Shared<C>>>,
    /// Flush callbacks, in order, to the task that fires them.
    flushes: mpsc::UnboundedSender<Flush<C>>,
    /// Encoding buffer, kept between appends.
    buf: Vec<u8>,
}

/// What the store and its readers share.
struct Shared<C: RaftTypeConfig> {
    meta: Meta<C::NodeId>,
    /// The last entry's log id (the last purged one when the log is empty).
    last: Option<LogId<C::NodeId>>,
    /// The latest entries, oldest first, with their encoded sizes: every entry not durable yet
    /// (the log's readers return only durable records), and the durable ones that fit in
    /// [`RECENT_BYTES`], so replication, which reads what was just appended, rarely goes to
    /// the log.
    fresh: VecDeque<(Lsn, C::Entry, usize)>,
    /// Encoded bytes of the entries in `fresh`.
    fresh_bytes: usize,
}

/// Encoded bytes of durable entries kept in memory for readers.
const RECENT_BYTES: usize = 4 << 20;

impl<C: RaftTypeConfig> Shared<C> {
    /// The first LSN readers may return: after the purged prefix.
    fn floor(&self) -> Lsn {
        self.meta.last_purged.as_ref().map_or(1, |p| p.index + 2)
    }

    /// Drops the oldest entries from memory while `drop(lsn)` holds for them and either they
    /// exceed the bytes kept or `always` is set.
    fn forget(&mut self, drop: impl Fn(Lsn) -> bool, always: bool) {
        while let Some(&(lsn, _, len)) = self.fresh.front() {
            if !drop(lsn) || !(always || self.fresh_bytes > RECENT_BYTES) {
                break;
            }
            self.fresh.pop_front();
            self.fresh_bytes -= len;
        }
    }

    fn forget_all(&mut self) {
        self.fresh.clear();
        self.fresh_bytes = 0;
    }
}

enum Flush<C: RaftTypeConfig> {
    /// Fire this callback once every record up to this LSN is durable.
    Entries(Lsn, LogFlushed<C>),
    /// Answer once every callback sent before has fired.
    Barrier(oneshot::Sender<()>),
}

impl<C: RaftTypeConfig, D: DiskIo + Clone> Clone for LogStore<C, D> {
    fn clone(&self) -> Self {
        Self {
            wal: self.wal.clone(),
            disk: self.disk.clone(),
            dir: self.dir.clone(),
            shared: Arc::clone(&self.shared),
            flushes: self.flushes.clone(),
            buf: Vec::new(),
        }
    }
}

fn lock<C: RaftTypeConfig>(shared: &Mutex<Shared<C>>) -> MutexGuard<'_, Shared<C>> {
    // Every update is whole before the lock is released.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C, D> LogStore<C, D>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
    D: DiskIo + Clone,
{
    /// Opens (or creates) the store in `dir` on `disk`: the log in `dir/log` with `options`,
    /// the vote and purge point in `dir/raft-meta`. Must be called within a Tokio runtime (the
    /// task that fires flush callbacks is spawned on it).
    ///
    /// # Errors
    ///
    /// The log's recovery errors ([`Error::Wal`]), an unreadable state file
    /// ([`Error::BadMeta`]), [`Error::Io`], a last entry that cannot be decoded.
    pub async fn open(disk: D, dir: impl AsRef<Path>, options: WalOptions) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        diskio::create_dir_all_durable(&disk, &dir).await?;
        let meta: Meta<C::NodeId> = meta::load(&disk, &dir).await?;
        let (wal, _report) = Wal::open(disk.clone(), dir.join(LOG_DIR), options).await?;
        let floor = meta.last_purged.as_ref().map_or(1, |p| p.index + 2);
        // A purge past the end of the log that a crash cut short (the state was saved, the skip
        // not made): make it now.
        if wal.next_lsn() < floor {
            wal.skip_to(floor).await?;
        }
        let next = wal.next_lsn();
        let last = if next > floor.max(wal.first_lsn()) {
            let mut reader = wal.reader(next - 1);
            match reader.next().await? {
                Some(rec) => Some(decode::<C>(rec.lsn, &rec.data)?.get_log_id().clone()),
                None => None,
            }
        } else {
            meta.last_purged.clone()
        };
        let shared = Arc::new(Mutex::new(Shared {
            meta,
            last,
            fresh: VecDeque::new(),
            fresh_bytes: 0,
        }));
        let (flushes, rx) = mpsc::unbounded_channel();
        tokio::spawn(fire_flushes(wal.clone(), rx));
        Ok(Self {
            wal,
            disk,
            dir,
            shared,
            flushes,
            buf: Vec::new(),
        })
    }

    /// The log underneath (for its statistics; appending to it directly breaks the store).
    pub fn wal(&self) -> &Wal<D> {
        &self.wal
    }

    /// A reader of entries, for openraft's replication tasks.
    fn reader(&self) -> LogReader<C, D> {
        LogReader {
            wal: self.wal.clone(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits until every flush callback sent so far has fired.
    async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.flushes.send(Flush::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    async fn save_meta(
        &self,
        meta: &Meta<C::NodeId>,
        subject: ErrorSubject<C::NodeId>,
    ) -> Result<(), StorageError<C::NodeId>> {
        meta::store(&self.disk, &self.dir, meta)
            .await
            .map_err(|e| storage(subject, ErrorVerb::Write, &e))
    }
}

/// Fires flush callbacks in order, each once the log is durable up to its LSN. One task per
/// store, for as long as the store lives.
async fn fire_flushes<C: RaftTypeConfig, D: DiskIo>(
    wal: Wal<D>,
    mut rx: mpsc::UnboundedReceiver<Flush<C>>,
) {
    while let Some(flush) = rx.recv().await {
        match flush {
            Flush::Entries(lsn, callback) => {
                let done = wal.wait_durable(lsn).await.map_err(std::io::Error::other);
                callback.log_io_completed(done);
            }
            Flush::Barrier(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

fn decode<C: RaftTypeConfig>(lsn: Lsn, bytes: &[u8]) -> Result<C::Entry, Error>
where
    C::Entry: DeserializeOwned,
{
    let entry: C::Entry = postcard::from_bytes(bytes).map_err(|e| Error::Codec {
        what: format!("the entry at log index {}", lsn - 1),
        reason: e.to_string(),
    })?;
    let found = entry.get_log_id().index;
    if found != lsn - 1 {
        return Err(Error::Misplaced {
            index: lsn - 1,
            found,
        });
    }
    Ok(entry)
}

/// Reads entries for openraft: durable ones from the log, fresh ones from memory.
pub struct LogReader<C: RaftTypeConfig, D: DiskIo> {
    wal: Wal<D>,
    shared: Arc<Mutex<Shared<C>>>,
}

impl<C, D> RaftLogReader<C> for LogReader<C, D>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
    D: DiskIo,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        read_range(&self.wal, &self.shared, lsn_range(&range)).await
    }
}

/// The LSNs `[from, to)` of the indexes in `range`.
fn lsn_range(range: &impl RangeBounds<u64>) -> (Lsn, Lsn) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i.saturating_add(2),
        Bound::Unbounded => 1,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(2),
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => Lsn::MAX,
    };
    (from, to)
}

/// The entries with LSNs in `[from, to)` that the log holds (after the purged prefix).
async fn read_range<C, D>(
    wal: &Wal<D>,
    shared: &Mutex<Shared<C>>,
    (from, to): (Lsn, Lsn),
) -> Result<Vec<C::Entry>, StorageError<C::NodeId>>
where
    C: RaftTypeConfig,
    C::Entry: Clone + DeserializeOwned,
    D: DiskIo,
{
    // Entries in memory first: anything older than the oldest of them is durable, so readable
    // from the log (entries leave `fresh` only once durable).
    let (floor, fresh_from, mut fresh) = {
        let sh = lock(shared);
        let fresh_from = sh.fresh.front().map_or(Lsn::MAX, |e| e.0);
        let fresh: Vec<C::Entry> = sh
            .fresh
            .iter()
            .filter(|(lsn, _, _)| *lsn >= from && *lsn < to)
            .map(|(_, e, _)| e.clone())
            .collect();
        (sh.floor(), fresh_from, fresh)
    };
    let from = from.max(floor).max(wal.first_lsn());
    let upto = to.min(fresh_from);
    let mut out = Vec::new();
    if from < upto {
        let mut reader = wal.reader(from);
        let mut data = Vec::new();
        while let Some(lsn) = reader
            .next_into(&mut data)
            .await
            .map_err(|e| storage(ErrorSubject::LogIndex(from - 1), ErrorVerb::Read, &e))?
        {
            if lsn >= upto {
                break;
            }
            let entry = decode::<C>(lsn, &data)
                .map_err(|e| storage(ErrorSubject::LogIndex(lsn - 1), ErrorVerb::Read, &e))?;
            out.push(entry);
            if lsn + 1 == upto {
                break;
            }
        }
    }
    out.append(&mut fresh);
    Ok(out)
}

impl<C, D> RaftLogReader<C> for LogStore<C, D>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
    D: DiskIo + Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        read_range(&self.wal, &self.shared, lsn_range(&range)).await
    }
}

impl<C, D> RaftLogStorage<C> for LogStore<C, D>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
    D: DiskIo + Clone,
{
    type LogReader = LogReader<C, D>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let sh = lock(&self.shared);
        Ok(LogState {
            last_purged_log_id: sh.meta.last_purged.clone(),
            last_log_id: sh.last.clone(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let mut meta = lock(&self.shared).meta.clone();
        meta.vote = Some(vote.clone());
        self.save_meta(&meta, ErrorSubject::Vote).await?;
        lock(&self.shared).meta.vote = Some(vote.clone());
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(lock(&self.shared).meta.vote.clone())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Entries durable by now are read from the log.
        let durable = self.wal.durable_end();
        {
            lock(&self.shared).forget(|lsn| lsn < durable, false);
        }
        let mut last_lsn = None;
        for entry in entries {
            let log_id = entry.get_log_id().clone();
            let lsn = log_id.index + 1;
            if lsn < lock(&self.shared).floor() {
                // Covered by the purged prefix (a snapshot holds its effect): nothing to keep.
                tracing::debug!(
                    index = log_id.index,
                    "wal-raft: entry at or below the purged index dropped"
                );
                continue;
            }
            let next = self.wal.next_lsn();
            if lsn != next {
                let (empty, purged) = {
                    let sh = lock(&self.shared);
                    (
                        sh.last == sh.meta.last_purged,
                        sh.meta.last_purged.is_some(),
                    )
                };
                if empty && !purged && lsn > next && last_lsn.is_none() {
                    // An empty log that never held anything starts where its first entry says.
                    self.wal.skip_to(lsn).await.map_err(|e| {
                        storage(ErrorSubject::Log(log_id.clone()), ErrorVerb::Write, &e)
                    })?;
                } else {
                    return Err(refused(
                        ErrorSubject::Log(log_id.clone()),
                        ErrorVerb::Write,
                        format!(
                            "entry {} does not follow the log's last index {}: raft log indexes \
                             must be contiguous",
                            log_id.index,
                            next as i128 - 2
                        ),
                    ));
                }
            }
            self.buf.clear();
            let buf = std::mem::take(&mut self.buf);
            let buf = postcard::to_extend(&entry, buf).map_err(|e| {
                refused(
                    ErrorSubject::Log(log_id.clone()),
                    ErrorVerb::Write,
                    format!("cannot encode the entry: {e}"),
                )
            })?;
            let buf_len = buf.len();
            let appended = self.wal.append_nowait(&buf).await;
            self.buf = buf;
            let got = appended
                .map_err(|e| storage(ErrorSubject::Log(log_id.clone()), ErrorVerb::Write, &e))?;
            debug_assert_eq!(got, lsn);
            let mut sh = lock(&self.shared);
            sh.fresh.push_back((lsn, entry, buf_len));
            sh.fresh_bytes += buf_len;
            sh.last = Some(log_id);
            last_lsn = Some(lsn);
        }
        match last_lsn {
            Some(lsn) => {
                if let Err(mpsc::error::SendError(Flush::Entries(_, callback))) =
                    self.flushes.send(Flush::Entries(lsn, callback))
                {
                    callback.log_io_completed(Err(std::io::Error::other(
                        "the store's flush task is gone",
                    )));
                }
            }
            None => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let lsn = log_id.index + 1;
        if lsn >= self.wal.next_lsn() {
            return Ok(());
        }
        let (floor, purged) = {
            let sh = lock(&self.shared);
            (sh.floor(), sh.meta.last_purged.clone())
        };
        if lsn < floor {
            return Err(refused(
                ErrorSubject::Log(log_id.clone()),
                ErrorVerb::Delete,
                format!(
                    "cannot truncate from index {}: entries up to {} are purged",
                    log_id.index,
                    floor - 2
                ),
            ));
        }
        // Callbacks of entries about to go fire first (they are made durable by the truncation's
        // own flush), so none waits on an LSN that no longer exists.
        self.wal
            .sync()
            .await
            .map_err(|e| storage(ErrorSubject::Log(log_id.clone()), ErrorVerb::Delete, &e))?;
        self.barrier().await;
        self.wal
            .truncate_from(lsn)
            .await
            .map_err(|e| storage(ErrorSubject::Log(log_id.clone()), ErrorVerb::Delete, &e))?;
        let last = if lsn > floor {
            let mut before = read_range(&self.wal, &self.shared, (lsn - 1, lsn)).await?;
            before.pop().map(|e| e.get_log_id().clone())
        } else {
            purged
        };
        let mut sh = lock(&self.shared);
        sh.forget_all();
        sh.last = last;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let mut meta = {
            let sh = lock(&self.shared);
            if sh
                .meta
                .last_purged
                .as_ref()
                .is_some_and(|p| p.index >= log_id.index)
            {
                return Ok(());
            }
            sh.meta.clone()
        };
        meta.last_purged = Some(log_id.clone());
        // The purge point is durable before any record goes, so the log never starts past it.
        self.save_meta(&meta, ErrorSubject::Log(log_id.clone()))
            .await?;
        let floor = log_id.index + 2;
        {
            let mut sh = lock(&self.shared);
            sh.meta.last_purged = Some(log_id.clone());
            if sh.last.as_ref().is_none_or(|l| l.index <= log_id.index) {
                sh.last = Some(log_id.clone());
            }
            sh.forget(|lsn| lsn < floor, true);
        }
        let delete =
            |e: wal::WalError| storage(ErrorSubject::Log(log_id.clone()), ErrorVerb::Delete, &e);
        if self.wal.next_lsn() < floor {
            // Purged past the end (a snapshot installed): the log continues after it.
            self.barrier().await;
            self.wal.skip_to(floor).await.map_err(delete)?;
            lock(&self.shared).forget_all();
        } else {
            self.wal.truncate_before(floor).await.map_err(delete)?;
        }
        Ok(())
    }
}
