//! Typed errors with the context of the operation that failed.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::file::FileId;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The result of an operation that took buffers by value: the outcome and the buffers, returned
/// on every path, errors included.
pub type BufResult<T, B = crate::AlignedBuf> = (Result<T>, B);

/// The operation an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Opening a file.
    Open,
    /// Closing a file.
    Close,
    /// `read_at` (and `read_exact_at`).
    Read,
    /// `write_at` (and `write_all_at`).
    Write,
    /// `writev_at` (and `writev_all_at`).
    Writev,
    /// `fsync` of either kind.
    Sync,
    /// The write-then-sync operation (in error contexts; its stats count as a `writev` and a
    /// `sync`).
    WriteSync,
    /// `preallocate`.
    Preallocate,
    /// `set_len`.
    SetLen,
    /// `file_len`.
    FileLen,
    /// Growing or filling an [`AlignedBuf`](crate::AlignedBuf).
    Buffer,
    /// Constructing or configuring a backend.
    Setup,
    /// A directory operation: listing, creating, removing a file, syncing entries.
    Dir,
}

impl Op {
    /// A short lowercase name, as used in messages and stats (`"read"`, `"writev"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Close => "close",
            Op::Read => "read",
            Op::Write => "write",
            Op::Writev => "writev",
            Op::Sync => "sync",
            Op::WriteSync => "write+sync",
            Op::Preallocate => "preallocate",
            Op::SetLen => "set_len",
            Op::FileLen => "file_len",
            Op::Buffer => "buffer",
            Op::Setup => "setup",
            Op::Dir => "dir",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an error happened: the operation and whatever of file, path, offset and length is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The operation.
    pub op: Op,
    /// The file it addressed, if any.
    pub file: Option<FileId>,
    /// The file's path, where the backend knows it.
    pub path: Option<Arc<Path>>,
    /// The byte offset in the file.
    pub offset: Option<u64>,
    /// The length in bytes.
    pub len: Option<u64>,
}

impl Context {
    /// A context naming only the operation.
    pub fn new(op: Op) -> Self {
        Self {
            op,
            file: None,
            path: None,
            offset: None,
            len: None,
        }
    }

    /// Adds the file.
    pub fn file(mut self, file: FileId) -> Self {
        self.file = Some(file);
        self
    }

    /// Adds the path.
    pub fn path(mut self, path: impl Into<Arc<Path>>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Adds the offset.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Adds the length.
    pub fn len(mut self, len: u64) -> Self {
        self.len = Some(len);
        self
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.name())?;
        if let Some(len) = self.len {
            write!(f, " of {len} bytes")?;
        }
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        if let Some(file) = self.file {
            write!(f, " on {file}")?;
        }
        if let Some(path) = &self.path {
            write!(f, " ({})", path.display())?;
        }
        Ok(())
    }
}

/// What part of an `O_DIRECT` request was misaligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misalignment {
    /// The buffer's memory address.
    Buffer,
    /// The file offset.
    Offset,
    /// The length of the transfer (or of one buffer of a vectored write).
    Length,
}

impl fmt::Display for Misalignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Misalignment::Buffer => "buffer address",
            Misalignment::Offset => "file offset",
            Misalignment::Length => "length",
        })
    }
}

/// Why a [`FileId`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadFileReason {
    /// The id was never handed out by this backend.
    Unknown,
    /// The file was closed.
    Closed,
    /// The file was not opened for this kind of access (e.g. a write on a read-only file).
    NotPermitted,
}

impl fmt::Display for BadFileReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadFileReason::Unknown => "this backend never opened that file id",
            BadFileReason::Closed => "the file was closed",
            BadFileReason::NotPermitted => "the file was not opened for this access",
        })
    }
}

/// Errors of diskio operations. Every variant that comes from an operation carries its
/// [`Context`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system reported an error.
    #[error("{ctx}: {source}")]
    Io {
        /// Where it happened.
        ctx: Context,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An `O_DIRECT` request whose buffer, offset or length is not aligned as the file requires.
    /// Detected before the kernel is asked.
    #[error(
        "{ctx}: {what} {value} is not a multiple of {required}, as O_DIRECT on this file requires"
    )]
    Misaligned {
        /// Where it happened.
        ctx: Context,
        /// Which part was misaligned.
        what: Misalignment,
        /// The offending value (address, offset or length).
        value: u64,
        /// The alignment the file requires for it.
        required: u64,
    },
    /// The backend cannot run here, or cannot do this operation. `reason` says what to change.
    #[error("unsupported: {reason}")]
    Unsupported {
        /// What is missing and what a person can do about it.
        reason: String,
    },
    /// The [`FileId`] is not open in this backend, or not open for this access.
    #[error("{ctx}: bad file: {reason}")]
    BadFile {
        /// Where it happened.
        ctx: Context,
        /// Why the id was refused.
        reason: BadFileReason,
    },
    /// A buffer could not be allocated.
    #[error("cannot allocate {bytes} bytes aligned to {align}: {reason}")]
    Alloc {
        /// The size asked for.
        bytes: usize,
        /// The alignment asked for.
        align: usize,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An argument was out of range (an offset past `i64::MAX`, a buffer too small, ...).
    #[error("{ctx}: invalid input: {reason}")]
    InvalidInput {
        /// Where it happened.
        ctx: Context,
        /// What was wrong.
        reason: String,
    },
    /// The backend was shut down, or its worker died, before the operation could finish.
    #[error("{ctx}: the backend is shut down")]
    Shutdown {
        /// Where it happened.
        ctx: Context,
    },
}

impl Error {
    /// An [`Error::Io`].
    pub fn io(ctx: Context, source: io::Error) -> Self {
        Error::Io { ctx, source }
    }

    /// An [`Error::Io`] from a raw `errno` value.
    pub fn from_errno(ctx: Context, errno: i32) -> Self {
        Error::Io {
            ctx,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    pub(crate) fn capacity(wanted: usize, capacity: usize) -> Self {
        Error::InvalidInput {
            ctx: Context::new(Op::Buffer).len(wanted as u64),
            reason: format!("a buffer of capacity {capacity} cannot hold {wanted} bytes"),
        }
    }

    /// The context of the operation, where the error has one.
    pub fn context(&self) -> Option<&Context> {
        match self {
            Error::Io { ctx, .. }
            | Error::Misaligned { ctx, .. }
            | Error::BadFile { ctx, .. }
            | Error::InvalidInput { ctx, .. }
            | Error::Shutdown { ctx } => Some(ctx),
            Error::Unsupported { .. } | Error::Alloc { .. } => None,
        }
    }

    /// The path of the file involved, where known.
    pub fn path(&self) -> Option<&Path> {
        self.context().and_then(|c| c.path.as_deref())
    }

    /// The closest [`io::ErrorKind`].
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. } => source.kind(),
            Error::Misaligned { .. } | Error::InvalidInput { .. } => io::ErrorKind::InvalidInput,
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
            Error::BadFile { .. } => io::ErrorKind::InvalidInput,
            Error::Alloc { .. } => io::ErrorKind::OutOfMemory,
            Error::Shutdown { .. } => io::ErrorKind::BrokenPipe,
        }
    }

    /// The OS error number, for [`Error::Io`] errors that came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Io { source, ctx } => io::Error::new(source.kind(), Error::Io { ctx, source }),
            other => io::Error::new(other.kind(), other),
        }
    }
}

/// Checks that `offset + len` stays within what the OS accepts (`i64::MAX`).
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the operation.
pub fn check_range(ctx: &Context, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(Error::InvalidInput {
            ctx: ctx.clone(),
            reason: format!("offset {offset} + length {len} is past the largest file offset"),
        }),
    }
}
