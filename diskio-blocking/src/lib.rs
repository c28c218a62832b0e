//! # diskio-blocking
//!
//! The portable [`DiskIo`](diskio::DiskIo) backend: a fixed pool of threads doing `pread`, `pwrite`, `pwritev`,
//! `pwritev2`, `fdatasync`, `fsync`, `fallocate` and `ftruncate`. It works on every Linux kernel and
//! filesystem, needs no io_uring, and is the default backend of the crates built on diskio.
//!
//! ## How it works
//!
//! Each operation takes a place in a bounded queue (waiting asynchronously, in FIFO order, when
//! the queue is full: that is the backpressure), moves its buffers into a job, and awaits the
//! job's result on a oneshot channel. A worker thread runs the system call and sends the buffers
//! back. Futures are `Send` and need nothing from the runtime, so they run on any Tokio runtime,
//! current-thread or multi-thread.
//!
//! - **A lone durable operation runs on its caller's thread.** A `write_sync_at` or an `fsync`
//!   of data (a full `fsync` always goes to a worker) that is alone in flight, called from a
//!   worker of a multi-thread Tokio runtime, makes its system calls right there: a sync
//!   outlasts any spin, and the hand-off to a worker and the
//!   wake-up back cost tens of µs on a virtual machine. With it (and the WAL's own change of
//!   the same release) the WAL's durable single writer went from 0.72-0.80x to 0.91-1.21x the
//!   best peer WAL's records/s, p50 0.93-1.12x a thread's own `pwrite` + `fdatasync`, at 47-50
//!   µs of CPU per record instead of 139-164. [`BlockingOptions::lone_sync_here`] turns it off.
//! - **A durable write is one system call.** `write_sync_at` is `pwritev2` with `RWF_DSYNC`
//!   (`RWF_SYNC` for [`SyncKind::All`](diskio::SyncKind::All)), which the kernel makes durable
//!   before it returns, rather than `pwritev` and then `fdatasync`: on an `O_DIRECT` file over
//!   written blocks of a device with FUA it is one FUA write with no separate flush, and
//!   elsewhere the same work in one call instead of two. Measured on a disk without FUA, 4 KiB
//!   at queue depth 1, three alternated invocations: p50 0.88-0.98x a thread calling `pwrite` +
//!   `fdatasync`, against 0.96-1.22x with the two calls. [`BlockingOptions::dsync_write`] turns
//!   it off.
//! - **Cancellation**: dropping a future does not cancel its job. A queued or running job runs to
//!   the end (a dropped write still lands) and its buffers are freed on the worker.
//! - **`O_DIRECT`**: the file's alignment comes from `statx(STATX_DIOALIGN)` at open (4096 if the
//!   kernel does not say); buffers, offsets and lengths are checked before the system call.
//! - **Fallback**: [`fallback`] is what the io_uring backends' `auto` functions fall back to
//!   when io_uring cannot run here.
//! - **Shutdown**: dropping the last handle stops accepting work, lets the workers finish every
//!   queued job, and joins them (so the drop blocks for as long as the slowest job in flight).
//!
//! ```
//! use diskio::{DiskIo, OpenOptions};
//! use diskio_blocking::{BlockingDisk, BlockingOptions};
//!
//! # let dir = std::env::temp_dir().join(format!("diskio-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let disk = BlockingDisk::new(BlockingOptions::new().threads(4))?;
//! let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! rt.block_on(async {
//!     let file = disk.open(&dir.join("data"), &OpenOptions::read_write_create()).await?;
//!     let buf = diskio::AlignedBuf::from_slice(b"hello", disk.alignment())?;
//!     let (res, _buf) = disk.write_all_at(file, buf, 0).await;
//!     res?;
//!     let (res, buf) = disk.read_at(file, disk.alloc(16)?, 0).await;
//!     assert_eq!(res?, 5);
//!     assert_eq!(&buf[..], b"hello");
//!     disk.close(file).await
//! })?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), diskio::Error>(())
//! ```

#![forbid(unsafe_code)]

mod fallback;
mod files;
mod ops;
mod options;
mod pool;
mod read;
mod sync;
mod write;

use std::sync::Arc;

use diskio::backend::{FileTable, Stats};
use diskio::{Context, Error, Op, Result};

use crate::files::OpenFile;
use crate::pool::Pool;

pub use crate::fallback::{AutoDisk, fallback};
pub use crate::options::{BlockingOptions, IN_FLIGHT_MAX, THREADS_MAX};

/// The blocking backend. Cheap to clone: clones share the threads, files and stats.
#[derive(Clone)]
pub struct BlockingDisk {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    files: FileTable<OpenFile>,
    stats: Stats,
    alignment: usize,
    /// `write_sync_at` is one `pwritev2` with `RWF_DSYNC` (Linux, and the option on).
    dsync_write: bool,
}

impl std::fmt::Debug for BlockingDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingDisk")
            .field("alignment", &self.inner.alignment)
            .finish_non_exhaustive()
    }
}

impl BlockingDisk {
    /// Starts the worker threads.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for options out of range, [`Error::Io`] if a thread cannot be
    /// spawned.
    pub fn new(options: BlockingOptions) -> Result<Self> {
        options.validate()?;
        let pool = Pool::new(
            options.threads,
            options.in_flight_max,
            options.spin,
            options.lone_sync_here,
            &options.thread_name,
        )
        .map_err(|e| Error::io(Context::new(Op::Setup), e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                files: FileTable::new(),
                stats: Stats::new(),
                alignment: options.alignment,
                dsync_write: cfg!(target_os = "linux") && options.dsync_write,
            }),
        })
    }

    /// With [`BlockingOptions::new`].
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_defaults() -> Result<Self> {
        Self::new(BlockingOptions::new())
    }
}
