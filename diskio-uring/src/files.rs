//! The caller's side record of an open file.

use diskio::FileAccess;

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
