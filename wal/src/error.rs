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
        "corruption in {} at offset {offset} (expected LSN {lsn}: {damage}), with valid records after it",
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
        damage: Damage,
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
    #[error("bad segment header in {}: {fault}", segment.display())]
    BadHeader {
        /// The segment file.
        segment: PathBuf,
        /// What is wrong.
        fault: HeaderFault,
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
    /// [`skip_to`](crate::Wal::skip_to) an LSN that has been handed out already.
    #[error(
        "cannot skip to LSN {lsn}: LSNs below {next} are handed out (truncate_from first to go back)"
    )]
    SkipBackwards {
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

/// What is wrong with the bytes found where a record was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    /// Too few bytes left for a frame header, and not all zeros.
    #[error("a partial frame header")]
    PartialHeader,
    /// A frame with another LSN than the one expected there (stale or misplaced).
    #[error("not the expected LSN (found {found})")]
    WrongLsn {
        /// The LSN the frame carries.
        found: Lsn,
    },
    /// A length above `record_max`.
    #[error("a length above record_max ({len} bytes)")]
    TooLong {
        /// The length the frame claims.
        len: usize,
    },
    /// A frame that runs past the end of the segment.
    #[error("a frame running past the end of the segment ({len} bytes)")]
    PastEnd {
        /// The length the frame claims.
        len: usize,
    },
    /// The frame's CRC32C does not match its bytes.
    #[error("a checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// The CRC stored in the frame.
        stored: u32,
        /// The CRC of the bytes found.
        computed: u32,
    },
    /// A group LSN of 0 or after the record's own.
    #[error("a group LSN after the record's own ({group})")]
    BadGroup {
        /// The group LSN the frame carries.
        group: Lsn,
    },
    /// Zeros where the record should be, with written bytes after them.
    #[error("zeros followed by written bytes")]
    ZerosThenData,
    /// A record that was durable when the reader looked reads as zeros.
    #[error("a durable record reads as zeros")]
    DurableZeros,
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderFault {
    /// Fewer bytes than a header.
    #[error("the file is shorter than a segment header")]
    Short,
    /// Not a diskio WAL segment.
    #[error("not a diskio WAL segment (bad magic)")]
    Magic,
    /// Written by another version of the format.
    #[error("format version {found}; this build reads version {supported}")]
    Version {
        /// The version in the header.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The header's checksum does not match.
    #[error("the segment header's checksum does not match")]
    Checksum,
    /// The fields are inconsistent (header length, LSN 0).
    #[error("the segment header's fields are inconsistent")]
    Fields,
    /// The header's first LSN is not the one in the file's name.
    #[error("the header says first LSN {header}, the name says {name}")]
    NameMismatch {
        /// The first LSN in the header.
        header: Lsn,
        /// The first LSN in the name.
        name: Lsn,
    },
    /// The segment starts before the LSN the previous segment reached.
    #[error("it starts at LSN {first}, before LSN {expected} which the previous segment reached")]
    Overlap {
        /// The segment's first LSN.
        first: Lsn,
        /// The LSN the previous segment reached.
        expected: Lsn,
    },
}
