//! The table of open files, and what each operation is checked against.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::{BadFileReason, Context, Error, Op, Result, check_range};
use crate::file::{DirectAlignment, FileId, OpenOptions};
use crate::stats::{OpTimer, Stats};

/// What an operation needs from its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The file must be open for reading.
    Read,
    /// The file must be open for writing.
    Write,
    /// Any open file will do (sync, length).
    Any,
}

impl Access {
    /// What `op` needs: reads read, writes and changes of length write, the rest any file.
    pub fn of(op: Op) -> Self {
        match op {
            Op::Read => Access::Read,
            Op::Write | Op::Writev | Op::WriteSync | Op::Preallocate | Op::SetLen => Access::Write,
            _ => Access::Any,
        }
    }
}

/// What every backend knows of an open file, whatever else it keeps.
#[derive(Debug, Clone)]
pub struct FileAccess {
    /// The path it was opened at (for error contexts).
    pub path: Arc<Path>,
    /// Its `O_DIRECT` alignment, or `None` if it is not a direct file.
    pub direct: Option<DirectAlignment>,
    /// Opened for reading.
    pub readable: bool,
    /// Opened for writing.
    pub writable: bool,
}

impl FileAccess {
    /// The record of a file opened at `path` with `options`, with the `O_DIRECT` alignment the
    /// backend found (ignored unless the options ask for `O_DIRECT`).
    pub fn new(path: Arc<Path>, options: &OpenOptions, direct: DirectAlignment) -> Self {
        Self {
            path,
            direct: options.is_direct().then_some(direct),
            readable: options.is_read(),
            writable: options.is_write(),
        }
    }

    /// Checks an operation before it is submitted: the access its operation needs
    /// ([`Access::of`]), the range `ctx.offset + ctx.len` ([`check_range`]) and, on a direct
    /// file, the alignment of every `(address, length)` part, laid out back to back from
    /// `ctx.offset`.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] ([`BadFileReason::NotPermitted`]), [`Error::InvalidInput`],
    /// [`Error::Misaligned`].
    #[inline]
    pub fn check(&self, ctx: &Context, parts: impl Iterator<Item = (usize, usize)>) -> Result<()> {
        let permitted = match Access::of(ctx.op) {
            Access::Read => self.readable,
            Access::Write => self.writable,
            Access::Any => true,
        };
        if !permitted {
            return Err(Error::BadFile {
                ctx: ctx.clone().path(self.path.clone()),
                reason: BadFileReason::NotPermitted,
            });
        }
        let offset = ctx.offset.unwrap_or(0);
        check_range(ctx, offset, ctx.len.unwrap_or(0))?;
        if let Some(align) = self.direct {
            let mut at = offset;
            for (addr, len) in parts {
                align.check(ctx, addr, at, len)?;
                at += len as u64;
            }
        }
        Ok(())
    }
}

impl<F: AsRef<FileAccess>> FileTable<F> {
    /// [`DiskIo::direct_alignment`](crate::DiskIo::direct_alignment) of an open file.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] if the id is not open.
    pub fn direct_alignment(&self, id: FileId) -> Result<Option<DirectAlignment>> {
        let f = self.get(id, || Context::new(Op::FileLen).file(id))?;
        Ok((*f).as_ref().direct)
    }

    /// [`DiskIo::file_len`](crate::DiskIo::file_len) as every backend runs it: admitted and
    /// counted, then an `fstat` of the file's descriptor (`std_file` finds it in the record) on
    /// the calling thread, since it never waits for the device.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`]; [`Error::Io`] from `fstat`, with the path.
    pub fn file_len_counted(
        &self,
        stats: &Stats,
        id: FileId,
        std_file: impl FnOnce(&F) -> &std::fs::File,
    ) -> Result<u64> {
        let op = self.admit_plain(stats, super::Request::new(Op::FileLen, id))?;
        let res = std_file(&op.file)
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(op.ctx.path((*op.file).as_ref().path.clone()), e));
        op.timer.finish(&res, |_| 0);
        res
    }
}

impl AsRef<FileAccess> for FileAccess {
    fn as_ref(&self) -> &FileAccess {
        self
    }
}

/// Open files by id. Ids are never reused, so an id that was closed is told apart from one that
/// was never issued ([`BadFileReason::Closed`] vs [`BadFileReason::Unknown`]).
///
/// Operations hold an `Arc` to their file's record, so removing a file while operations are in
/// flight keeps the record (and whatever descriptor it owns) alive until the last one finishes.
pub struct FileTable<F> {
    open: RwLock<HashMap<u64, Arc<F>>>,
    next: AtomicU64,
}

impl<F> Default for FileTable<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> std::fmt::Debug for FileTable<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTable")
            .field("open", &self.read().len())
            .finish_non_exhaustive()
    }
}

impl<F> FileTable<F> {
    /// An empty table; the first id issued is 1.
    pub fn new() -> Self {
        Self {
            open: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Arc<F>>> {
        // The map stays consistent even if a holder panicked: inserts and removes are atomic.
        self.open.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Arc<F>>> {
        self.open.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a file and returns its new id.
    pub fn insert(&self, file: F) -> FileId {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.write().insert(id, Arc::new(file));
        FileId::from_raw(id)
    }

    /// The file with this id.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] with `ctx()` if the id is not open.
    pub fn get(&self, id: FileId, ctx: impl FnOnce() -> Context) -> Result<Arc<F>> {
        match self.read().get(&id.into_raw()) {
            Some(f) => Ok(Arc::clone(f)),
            None => Err(self.bad(id, ctx())),
        }
    }

    /// Removes the file; returns its record (other holders may keep it alive for a while).
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] with `ctx()` if the id is not open.
    pub fn remove(&self, id: FileId, ctx: impl FnOnce() -> Context) -> Result<Arc<F>> {
        let removed = self.write().remove(&id.into_raw());
        removed.ok_or_else(|| self.bad(id, ctx()))
    }

    /// The end of `open`, counted as every backend counts it: the timer (started as the open
    /// was) finished, the file inserted; returns its new id.
    ///
    /// # Errors
    ///
    /// The open's error.
    pub fn insert_opened(&self, timer: OpTimer, opened: Result<F>) -> Result<FileId> {
        timer.finish(&opened, |_| 0);
        Ok(self.insert(opened?))
    }

    /// `close`, counted in `stats` as every backend counts it: removes the file and returns its
    /// record (operations in flight keep it alive until they finish).
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] if the id is not open.
    pub fn close_counted(&self, stats: &Stats, id: FileId) -> Result<Arc<F>> {
        let timer = stats.start(Op::Close);
        let res = self.remove(id, || Context::new(Op::Close).file(id));
        timer.finish(&res, |_| 0);
        res
    }

    /// Removes every file (at shutdown).
    pub fn clear(&self) -> Vec<Arc<F>> {
        self.write().drain().map(|(_, f)| f).collect()
    }

    fn bad(&self, id: FileId, ctx: Context) -> Error {
        let raw = id.into_raw();
        let reason = if raw != 0 && raw < self.next.load(Ordering::Relaxed) {
            BadFileReason::Closed
        } else {
            BadFileReason::Unknown
        };
        Error::BadFile {
            ctx: ctx.file(id),
            reason,
        }
    }
}
