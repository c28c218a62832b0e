//! The store's errors, and their mapping onto openraft's `StorageError`.

use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, NodeId, StorageError, StorageIOError};

/// What went wrong opening or using a [`LogStore`](crate::LogStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log underneath failed (recovery, a write or sync, a truncation).
    #[error("the log: {0}")]
    Wal(#[from] wal::WalError),
    /// An I/O operation on the store's own files failed.
    #[error("{0}")]
    Io(#[from] diskio::Error),
    /// The file holding the vote and the purged log id cannot be read.
    #[error("bad raft state file {}: {reason}", path.display())]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry or the state cannot be encoded, or a stored one cannot be decoded.
    #[error("cannot encode or decode {what}: {reason}")]
    Codec {
        /// What was being encoded or decoded.
        what: String,
        /// The codec's message.
        reason: String,
    },
    /// A stored record decodes to an entry with another index than its place in the log.
    #[error("the record at log index {index} holds the entry of index {found}")]
    Misplaced {
        /// The index the record sits at.
        index: u64,
        /// The index its entry names.
        found: u64,
    },
}

/// `e` as openraft's storage error about `subject`.
pub(crate) fn storage<NID: NodeId>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    e: &(impl std::error::Error + 'static),
) -> StorageError<NID> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

/// A refusal of bad input (not an I/O failure) as openraft's storage error.
pub(crate) fn refused<NID: NodeId>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    why: String,
) -> StorageError<NID> {
    StorageIOError::new(subject, verb, AnyError::error(why)).into()
}
