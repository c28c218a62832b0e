//! Files, how to open them, and how to sync them.

use std::fmt;

use crate::error::{Context, Error, Misalignment, Result};

/// A handle to a file opened through a [`DiskIo`](crate::DiskIo) backend.
///
/// Ids are issued by the backend that opened the file and mean nothing to another backend.
/// A backend never reuses an id, so an id that outlives its file is reported as
/// [`BadFileReason::Closed`](crate::BadFileReason::Closed), never confused with a newer file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(u64);

impl FileId {
    /// Wraps a raw id. For backend implementations; users get ids from `open`.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw id.
    pub const fn into_raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file #{}", self.0)
    }
}

/// How a file is opened. The defaults open an existing file read-only.
///
/// ```
/// use diskio::OpenOptions;
///
/// let opts = OpenOptions::new().read(true).write(true).create(true).direct(true);
/// assert!(opts.is_direct());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    direct: bool,
    dsync: bool,
    mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenOptions {
    /// Read-only, no creation, no truncation, buffered, mode `0o644` for created files.
    pub const fn new() -> Self {
        Self {
            read: true,
            write: false,
            create: false,
            create_new: false,
            truncate: false,
            direct: false,
            dsync: false,
            mode: 0o644,
        }
    }

    /// Read and write, creating the file if it is missing: the common case for data files.
    pub const fn read_write_create() -> Self {
        Self::new().read(true).write(true).create(true)
    }

    /// Open for reading.
    pub const fn read(mut self, yes: bool) -> Self {
        self.read = yes;
        self
    }

    /// Open for writing.
    pub const fn write(mut self, yes: bool) -> Self {
        self.write = yes;
        self
    }

    /// Create the file if it does not exist (needs `write`).
    pub const fn create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }

    /// Create the file, failing if it exists (needs `write`).
    pub const fn create_new(mut self, yes: bool) -> Self {
        self.create_new = yes;
        self
    }

    /// Truncate the file to length 0 on open (needs `write`).
    pub const fn truncate(mut self, yes: bool) -> Self {
        self.truncate = yes;
        self
    }

    /// Bypass the page cache (`O_DIRECT`). Buffers, offsets and lengths must then be aligned
    /// as the file requires ([`DirectAlignment`]); backends check before the kernel is asked.
    pub const fn direct(mut self, yes: bool) -> Self {
        self.direct = yes;
        self
    }

    /// Make every write durable before it completes (`O_DSYNC`).
    pub const fn dsync(mut self, yes: bool) -> Self {
        self.dsync = yes;
        self
    }

    /// Permission bits for a created file (default `0o644`).
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Whether reading is allowed.
    pub const fn is_read(&self) -> bool {
        self.read
    }

    /// Whether writing is allowed.
    pub const fn is_write(&self) -> bool {
        self.write
    }

    /// Whether a missing file is created.
    pub const fn is_create(&self) -> bool {
        self.create
    }

    /// Whether the file must not exist yet.
    pub const fn is_create_new(&self) -> bool {
        self.create_new
    }

    /// Whether the file is truncated on open.
    pub const fn is_truncate(&self) -> bool {
        self.truncate
    }

    /// Whether `O_DIRECT` is requested.
    pub const fn is_direct(&self) -> bool {
        self.direct
    }

    /// Whether `O_DSYNC` is requested.
    pub const fn is_dsync(&self) -> bool {
        self.dsync
    }

    /// Permission bits for a created file.
    pub const fn mode_bits(&self) -> u32 {
        self.mode
    }

    /// The `open(2)` flags these options stand for (access mode, creation, truncation,
    /// `O_CLOEXEC`, `O_DIRECT`, `O_DSYNC`), for backends that open files themselves (through
    /// io_uring's `OPENAT`, say). The same combinations are refused as by
    /// [`std::fs::OpenOptions`].
    ///
    /// # Errors
    ///
    /// `EINVAL` (as [`std::io::Error`]) for neither read nor write, or for create, create-new or
    /// truncate without write.
    #[cfg(target_os = "linux")]
    pub fn open_flags(&self) -> std::io::Result<i32> {
        let invalid = || std::io::Error::from_raw_os_error(libc::EINVAL);
        let mut flags = match (self.read, self.write) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => return Err(invalid()),
        };
        if (self.create || self.create_new || self.truncate) && !self.write {
            return Err(invalid());
        }
        if self.create_new {
            flags |= libc::O_CREAT | libc::O_EXCL;
        } else {
            if self.create {
                flags |= libc::O_CREAT;
            }
            if self.truncate {
                flags |= libc::O_TRUNC;
            }
        }
        flags |= libc::O_CLOEXEC;
        if self.direct {
            flags |= libc::O_DIRECT;
        }
        if self.dsync {
            flags |= libc::O_DSYNC;
        }
        Ok(flags)
    }

    /// Converts to [`std::fs::OpenOptions`], including the `O_DIRECT`/`O_DSYNC` flags and mode.
    /// Backends built on file descriptors use it so that every backend opens files alike.
    #[cfg(target_os = "linux")]
    pub fn to_std(&self) -> std::fs::OpenOptions {
        use std::os::unix::fs::OpenOptionsExt;
        let mut std_opts = std::fs::OpenOptions::new();
        std_opts
            .read(self.read)
            .write(self.write)
            .create(self.create)
            .create_new(self.create_new)
            .truncate(self.truncate)
            .mode(self.mode);
        let mut flags = libc::O_CLOEXEC;
        if self.direct {
            flags |= libc::O_DIRECT;
        }
        if self.dsync {
            flags |= libc::O_DSYNC;
        }
        std_opts.custom_flags(flags);
        std_opts
    }
}

/// What a sync makes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncKind {
    /// The data and the metadata needed to read it back (`fdatasync`).
    Data,
    /// Data and all metadata, timestamps included (`fsync`).
    All,
}

/// The alignment an `O_DIRECT` file requires, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectAlignment {
    /// Buffer addresses must be a multiple of this.
    pub memory: u32,
    /// File offsets and lengths must be a multiple of this.
    pub offset: u32,
}

impl DirectAlignment {
    /// No requirement (1 for both): what a file that is not `O_DIRECT` needs.
    pub const NONE: DirectAlignment = DirectAlignment {
        memory: 1,
        offset: 1,
    };

    /// Checks a transfer against this alignment: `addr` (the buffer address) against
    /// `memory`, `offset` and `len` against `offset`. Backends call it before submitting, so
    /// every backend reports misalignment alike.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] naming the first misaligned part.
    pub fn check(&self, ctx: &Context, addr: usize, offset: u64, len: usize) -> Result<()> {
        let misaligned = |what, value: u64, required: u32| Error::Misaligned {
            ctx: ctx.clone(),
            what,
            value,
            required: u64::from(required),
        };
        let mem = self.memory.max(1) as usize;
        let off = u64::from(self.offset.max(1));
        if addr % mem != 0 {
            return Err(misaligned(Misalignment::Buffer, addr as u64, self.memory));
        }
        if offset % off != 0 {
            return Err(misaligned(Misalignment::Offset, offset, self.offset));
        }
        if len as u64 % off != 0 {
            return Err(misaligned(Misalignment::Length, len as u64, self.offset));
        }
        Ok(())
    }

    /// The strictest of the two alignments: a buffer, offset and length aligned to it always
    /// satisfies the file.
    pub fn max(&self) -> usize {
        self.memory.max(self.offset) as usize
    }
}

/// What a backend can do natively. Nothing here is emulated behind the caller's back: a `false`
/// means the operation exists but runs as separate steps (or not at all, where documented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// `write_sync_at` is one linked kernel submission (a write, then a sync) rather than a
    /// write and then a sync submitted apart.
    pub linked_write_sync: bool,
    /// `write_sync_at` is one write that the kernel makes durable itself before it completes
    /// (`RWF_DSYNC`, or `RWF_SYNC` for [`SyncKind::All`]): no separate sync at all.
    pub dsync_write: bool,
    /// Buffers from the backend's pool are registered with the kernel (fixed buffers).
    pub fixed_buffers: bool,
    /// Files are registered with the kernel (fixed files).
    pub registered_files: bool,
    /// `O_DIRECT` opens are supported.
    pub direct_io: bool,
}
