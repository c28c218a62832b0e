//! The caller's side record of an open file.

use diskio::backend::FileAccess;
use diskio::{Context, Error};

/// An open file, as the callers' side knows it. Operations in flight hold an `Arc` to it.
pub(crate) struct OpenFile {
    /// The executor the file is pinned to: every operation on it goes through that queue, so
    /// operations on one file reach the ring in the order they were issued.
    pub(crate) executor: usize,
    /// The executor's key for its tokio-uring file.
    pub(crate) key: u64,
    /// A second descriptor of the same open file, for `fstat` (on the caller's thread) and
    /// `ftruncate` (on the executor's).
    pub(crate) std: std::fs::File,
    pub(crate) access: FileAccess,
}

impl OpenFile {
    /// The context `ctx` with this file's path, for an error from the OS.
    pub(crate) fn err(&self, ctx: Context, e: std::io::Error) -> Error {
        Error::io(ctx.path(self.access.path.clone()), e)
    }
}

impl AsRef<FileAccess> for OpenFile {
    fn as_ref(&self) -> &FileAccess {
        &self.access
    }
}
