//! The WAL's errors.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Lsn;

/// `Result` with [`WalError`].
pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O operation failed (before the log was poisoned, e.g. while opening).
    #[error("{0}")]
    Io(#[from] Arc<diskio::Error>),
    /// A write or sync of the log failed earlier. Nothing has been acknowledged since; every call
    /// fails with this error until the log is reopened (which recovers what is durable).
    #[error("the log is poisoned by an earlier failure and must be reopened: {cause}")]
    Poisoned {
        /// The failure that poisoned the log.
        cause: Arc<diskio::Error>,
    },
    /// Recovery found damage with valid records after it: data that was acknowledged may be
    /// lost. Reopen with [`RecoveryMode::StopAtDamage`](crate::RecoveryMode::StopAtDamage) to
    /// keep what is before the damage and cut the rest.
    #[error(
        "corruption in {} at offset {offset} (expected LSN {lsn}: {reason}), with valid records after it",
        segment.display()
    )]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damaged frame.
        offset: u64,
        /// The LSN expected there.
        lsn: Lsn,
        /// What was wrong with it.
        reason: String,
    },
    /// A segment in the middle of the log is missing (LSNs jump between two segments).
    #[error("segment missing: the log jumps from LSN {expected} to {found} at {}", segment.display())]
    MissingSegment {
        /// The segment found after the gap.
        segment: PathBuf,
        /// The LSN expected next.
        expected: Lsn,
        /// The first LSN of the segment found.
        found: Lsn,
    },
    /// A segment's header cannot be read.
    #[error("bad segment header in {}: {reason}", segment.display())]
    BadHeader {
        /// The segment file.
        segment: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record larger than [`WalOptions::record_max`](crate::WalOptions::record_max).
    #[error("a record of {len} bytes is larger than record_max ({max})")]
    RecordTooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Options out of range.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// A reader asked for records that [`truncate_before`](crate::Wal::truncate_before) removed.
    #[error("LSN {lsn} was truncated away; the log now starts at {first}")]
    Truncated {
        /// The LSN asked for.
        lsn: Lsn,
        /// The first LSN still in the log.
        first: Lsn,
    },
    /// [`wait_durable`](crate::Wal::wait_durable) of an LSN that no append has been given.
    #[error("LSN {lsn} has not been appended (the next append gets {next})")]
    NotAppended {
        /// The LSN asked for.
        lsn: Lsn,
        /// The LSN the next append gets.
        next: Lsn,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
}

impl From<diskio::Error> for WalError {
    fn from(e: diskio::Error) -> Self {
        WalError::Io(Arc::new(e))
    }
}
