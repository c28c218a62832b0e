//! Building blocks for backends: the table of open files and the checks every operation makes.
//!
//! Every backend maps [`FileId`]s to its own open-file records and checks each operation against
//! the file the same way (access, range, `O_DIRECT` alignment). Doing both here keeps backends
//! consistent, and saves the author of a new backend from getting them subtly different.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::{BadFileReason, Context, Error, Result, check_range};
use crate::file::{DirectAlignment, FileId, OpenOptions};

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

    /// Checks an operation before it is submitted: the access, the range
    /// ([`check_range`]) and, on a direct file, the alignment of every `(address, length)`
    /// part, laid out back to back from `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] ([`BadFileReason::NotPermitted`]), [`Error::InvalidInput`],
    /// [`Error::Misaligned`].
    pub fn check(
        &self,
        ctx: &Context,
        access: Access,
        offset: u64,
        parts: impl Iterator<Item = (usize, usize)> + Clone,
    ) -> Result<()> {
        let permitted = match access {
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
        let total: usize = parts.clone().map(|(_, len)| len).sum();
        check_range(ctx, offset, total as u64)?;
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
