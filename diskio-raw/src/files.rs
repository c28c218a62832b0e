//! Open files and the ring's registered file table.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use diskio::backend::FileAccess;
use diskio::{Context, Error};

use crate::ring::Ring;

/// An open file. Operations in flight hold an `Arc` to it, so its registered slot is neither
/// cleared nor reused, and its descriptor not closed, until the last of them completes.
pub(crate) struct OpenFile {
    pub(crate) file: File,
    /// Its slot in the ring's registered file table, if it got one.
    pub(crate) slot: Option<u32>,
    pub(crate) access: FileAccess,
    pub(crate) registry: Arc<FileSlots>,
}

impl OpenFile {
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The context `ctx` with this file's path, for an error from the OS.
    pub(crate) fn err(&self, ctx: Context, e: std::io::Error) -> Error {
        Error::io(ctx.path(self.access.path.clone()), e)
    }

    /// As [`err`](Self::err), from an errno.
    pub(crate) fn errno(&self, ctx: Context, errno: i32) -> Error {
        Error::from_errno(ctx.path(self.access.path.clone()), errno)
    }
}

impl AsRef<FileAccess> for OpenFile {
    fn as_ref(&self) -> &FileAccess {
        &self.access
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.registry.release(slot);
        }
    }
}

/// The registered (sparse) file table: which slots are free.
pub(crate) struct FileSlots {
    ring: Arc<Ring>,
    free: Mutex<Vec<u32>>,
}

impl FileSlots {
    /// A table of `count` slots, already registered sparse with the ring (or 0 slots when
    /// registration failed).
    pub(crate) fn new(ring: Arc<Ring>, count: u32) -> Self {
        Self {
            ring,
            free: Mutex::new((0..count).rev().collect()),
        }
    }

    /// Registers `fd` in a free slot; `None` when the table is full or the kernel refuses (the
    /// file then works through its plain descriptor).
    pub(crate) fn register(&self, fd: RawFd) -> Option<u32> {
        let slot = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        match self
            .ring
            .uring()
            .submitter()
            .register_files_update(slot, &[fd])
        {
            Ok(_) => Some(slot),
            Err(e) => {
                tracing::debug!(error = %e, slot, "could not register a file; using its descriptor");
                self.put_back(slot);
                None
            }
        }
    }

    fn release(&self, slot: u32) {
        // Clearing drops the ring's reference to the file, so the file is really closed when
        // the user closes it. Failure leaves a stale entry that the next registration replaces.
        if let Err(e) = self
            .ring
            .uring()
            .submitter()
            .register_files_update(slot, &[-1])
        {
            tracing::debug!(error = %e, slot, "could not clear a registered file slot");
        }
        self.put_back(slot);
    }

    fn put_back(&self, slot: u32) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(slot);
    }
}
