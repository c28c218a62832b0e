//! # diskio-uring
//!
//! A [`DiskIo`](diskio::DiskIo) backend on [tokio-uring]: its operations go through io_uring
//! with tokio-uring's safe owned-buffer API, and callers on **any** Tokio runtime get `Send`
//! futures.
//!
//! ## How it works
//!
//! tokio-uring runs its own single-threaded executor, and its files and futures are `!Send`:
//! they must stay on the thread that created them. [`UringDisk`] therefore starts
//! [`UringOptions::executors`] threads (one by default), each running a tokio-uring runtime.
//! An operation checks its arguments on the caller's thread (file, access, range, `O_DIRECT`
//! alignment), moves its buffers into a job, sends the job over the executor's **bounded**
//! queue and awaits a oneshot reply that carries the buffers back.
//!
//! - **Files are pinned** to one executor, chosen round-robin at open, so every operation on a
//!   file goes through one queue and reaches the ring in the order it was issued.
//! - **Backpressure**: each executor runs at most [`UringOptions::in_flight_max`] jobs at once;
//!   beyond that its queue ([`UringOptions::queue_max`]) fills and callers wait, in order.
//! - **Cancellation**: dropping a future does not cancel its job. The executor runs it to the
//!   end and frees the buffers after the kernel is done with them.
//! - **A dead executor** (its thread panicked) is never a hang: every call that needs it fails
//!   with [`Error::Shutdown`], including those already waiting.
//! - **Shutdown**: dropping the last handle closes the queues; each executor finishes the jobs
//!   it has, and the drop joins the threads (it blocks for as long as the slowest job).
//!
//! ## What goes through io_uring, and what does not
//!
//! | operation | how |
//! |---|---|
//! | `read_at`, `write_at`, `writev_at` | tokio-uring `READ`, `WRITE`, `WRITEV` |
//! | `fsync` | tokio-uring `FSYNC` (with `DATASYNC` for [`SyncKind::Data`](diskio::SyncKind::Data)) |
//! | `preallocate` | tokio-uring `FALLOCATE` |
//! | `write_sync_at` | `WRITEV` then `FSYNC` in one job: one trip to the executor, two submissions (tokio-uring cannot link them) |
//! | `write_sync_at`, `fsync` of data, alone | `pwrite` + `fdatasync`/`fsync` **on the caller's thread**, when nothing else is in flight or queued on the file's executor and the caller is a multi-thread runtime's worker ([`UringOptions::lone_sync_here`], on by default) |
//! | `open` | `open(2)`, `fstat` and `statx` **on the executor thread** (the `statx` reads the `O_DIRECT` alignment) |
//! | `set_len` | `ftruncate(2)` **on the executor thread** (tokio-uring has no truncate operation) |
//! | `file_len` | `fstat` on the caller's thread (it never waits for the device) |
//! | `close` | drops the executor's file; its descriptor closes once the operations in flight on it finish |
//!
//! `O_DIRECT` is an open flag ([`OpenOptions::direct`](diskio::OpenOptions::direct)); buffers,
//! offsets and lengths are checked against the file's alignment before the job is sent, so a
//! misaligned request is [`Error::Misaligned`] and never reaches the
//! kernel.
//!
//! ## Why this backend exists next to `diskio-raw`
//!
//! `diskio-raw` owns its ring and is the fast path: registered files, fixed buffers, linked
//! write→sync, and cached reads that complete on the caller's thread with no hop at all. This
//! backend is the middle road: it builds on tokio-uring's **safe** operations and lifecycle
//! rules, with `unsafe` only where an [`AlignedBuf`](diskio::AlignedBuf) is described to
//! tokio-uring. It is also the backend to compare against when a question is whether our own
//! ring handling is right: both run the same conformance suite.
//!
//! ## What it costs
//!
//! **A thread hop per operation, each way**: the job crosses to the executor thread, and the
//! reply wakes the caller's task on its own thread. On a small virtual machine each hop is tens
//! of microseconds when the threads are asleep, so at queue depth 1 this backend is slower than
//! `diskio-raw` and the blocking backend (whose idle workers spin briefly); a durable write
//! alone in flight skips the executor for that reason (see the table above). With many
//! operations in flight the hops overlap and the ring's batching shows. The README has the
//! figures, measured by `diskio-bench` against fio and the other backends.
//!
//! ## Fixed buffers
//!
//! Not used. tokio-uring's fixed-buffer registry owns the registered memory and lends it out as
//! its own `FixedBuf` type, so an [`AlignedBuf`](diskio::AlignedBuf) handed back to the caller
//! could only come from it by a copy, which the trait's contract rules out (no hidden copies).
//! `diskio-raw` registers the memory of its own buffer pool instead.
//!
//! ## tokio-uring as a dependency
//!
//! tokio-uring is maintained under the Tokio project, but its latest release (0.5) is from 2024
//! and it moves slowly. What this backend works around: its runtime constructor returns an
//! error (the `start` helpers panic instead, so they are not used); a few of its operations
//! panic if the submission queue cannot be flushed, which here kills one job, and that job's
//! caller gets [`Error::Shutdown`]; dropping its runtime cancels
//! operations still in flight, so the executors finish their jobs before they stop.
//!
//! ## When io_uring is not available
//!
//! [`UringDisk::new`] fails with [`Error::Unsupported`] and a reason
//! a person can act on. Setting the environment variable `DISKIO_URING_DISABLE` to any
//! non-empty value makes construction fail the same way.
//!
//! ```
//! use diskio::{DiskIo, OpenOptions, SyncKind};
//! use diskio_uring::{UringDisk, UringOptions};
//!
//! # let dir = std::env::temp_dir().join(format!("diskio-uring-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let disk = match UringDisk::new(UringOptions::new()) {
//!     Ok(disk) => disk,
//!     Err(e) => {
//!         eprintln!("no io_uring here: {e}");
//!         return Ok(());
//!     }
//! };
//! // Any runtime will do: the futures are `Send`.
//! let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
//! rt.block_on(async {
//!     let file = disk.open(&dir.join("log"), &OpenOptions::read_write_create()).await?;
//!     let mut buf = disk.alloc(5)?;
//!     buf.copy_from_slice(b"hello");
//!     let (res, _bufs) = disk.write_sync_at(file, vec![buf], 0, SyncKind::Data).await;
//!     assert_eq!(res?, 5);
//!     disk.close(file).await
//! })?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), diskio::Error>(())
//! ```
//!
//! [tokio-uring]: https://docs.rs/tokio-uring

#![deny(unsafe_code)]

#[allow(unsafe_code)] // the one module that describes buffers to the kernel
mod bufs;
mod calls;
mod executor;
mod files;
mod ops;
mod options;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diskio::backend::{
    FileTable, Stats, check_disable_env, check_opcodes, probe_refused, setup_refused,
};
use diskio::{Context, Error, Op, Result};

use crate::executor::{Config, Executor, Job, StartError};
use crate::files::OpenFile;
pub use crate::options::{ENTRIES_MAX, EXECUTORS_MAX, QUEUE_MAX, UringOptions};
pub use diskio_blocking::AutoDisk;

/// The environment variable that turns the backend off.
pub const DISABLE_ENV: &str = "DISKIO_URING_DISABLE";

/// The tokio-uring backend. Cheap to clone: clones share the executors, files and stats.
#[derive(Clone)]
pub struct UringDisk {
    inner: Arc<Inner>,
}

struct Inner {
    executors: Vec<Executor>,
    next_executor: AtomicUsize,
    files: FileTable<OpenFile>,
    stats: Stats,
    alignment: usize,
    spin: Duration,
    /// Callers between sending a job and getting its answer.
    in_flight: AtomicUsize,
    /// A lone durable operation runs on its caller's thread ([`UringOptions::lone_sync_here`]).
    lone_sync_here: bool,
}

impl std::fmt::Debug for UringDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDisk")
            .field("executors", &self.inner.executors.len())
            .field("alignment", &self.inner.alignment)
            .finish_non_exhaustive()
    }
}

/// The opcodes this backend submits (through tokio-uring).
const NEEDED: [(u8, &str); 5] = [
    (io_uring::opcode::Read::CODE, "READ"),
    (io_uring::opcode::Write::CODE, "WRITE"),
    (io_uring::opcode::Writev::CODE, "WRITEV"),
    (io_uring::opcode::Fsync::CODE, "FSYNC"),
    (io_uring::opcode::Fallocate::CODE, "FALLOCATE"),
];

impl UringDisk {
    /// Checks that io_uring works here and has the opcodes this backend uses, then starts the
    /// executor threads.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for options out of range; [`Error::Unsupported`] with the reason
    /// when io_uring cannot be used here; [`Error::Io`] if a thread cannot be spawned.
    pub fn new(options: UringOptions) -> Result<Self> {
        options.validate()?;
        probe()?;
        let config = Config {
            entries: options.entries,
            queue_max: options.queue_max,
            in_flight_max: options.in_flight_max,
            spin: options.spin,
        };
        let mut executors = Vec::with_capacity(options.executors);
        for index in 0..options.executors {
            // On failure, the executors already started stop when `executors` drops.
            let executor =
                executor::start(index, &options.thread_name, config).map_err(|e| match e {
                    StartError::Runtime(e) => setup_refused(&e),
                    StartError::Thread(e) => Error::io(Context::new(Op::Setup), e),
                })?;
            executors.push(executor);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                executors,
                next_executor: AtomicUsize::new(0),
                files: FileTable::new(),
                stats: Stats::new(),
                alignment: options.alignment,
                spin: options.spin,
                in_flight: AtomicUsize::new(0),
                lone_sync_here: options.lone_sync_here,
            }),
        })
    }

    /// With [`UringOptions::new`].
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_defaults() -> Result<Self> {
        Self::new(UringOptions::new())
    }

    /// The number of executor threads.
    pub fn executors(&self) -> usize {
        self.inner.executors.len()
    }

    /// Makes executor `index` panic, as a bug in it would. Only for tests of what callers see
    /// when an executor dies; nothing else should call it.
    #[doc(hidden)]
    pub async fn crash_executor_for_tests(&self, index: usize) {
        if let Some(executor) = self.inner.executors.get(index) {
            let _ = executor.jobs.send(Job::Crash).await;
        }
    }

    fn pick_executor(&self) -> usize {
        self.inner.next_executor.fetch_add(1, Ordering::Relaxed) % self.inner.executors.len()
    }
}

/// Fails with the reason if io_uring cannot run the opcodes this backend needs.
fn probe() -> Result<()> {
    check_disable_env(DISABLE_ENV, "diskio-uring")?;
    let ring = io_uring::IoUring::new(2).map_err(|e| setup_refused(&e))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| probe_refused(&e))?;
    check_opcodes(&NEEDED, |code| probe.is_supported(code))
}

/// The tokio-uring backend if io_uring works here, else the blocking backend, with the reason
/// logged (`tracing` warning) and returned: [`diskio_blocking::fallback`] with this backend.
/// Only [`Error::Unsupported`] falls back: bad options are still an error.
///
/// # Errors
///
/// [`Error::InvalidInput`] for bad options; errors of the blocking backend's construction.
pub fn auto(uring: UringOptions, blocking: diskio_blocking::BlockingOptions) -> Result<AutoDisk> {
    diskio_blocking::fallback(UringDisk::new(uring), blocking)
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing every queue ends the executors' loops once they have finished their jobs.
        let threads: Vec<_> = self
            .executors
            .iter_mut()
            .filter_map(|e| e.thread.take())
            .collect();
        self.executors.clear();
        for thread in threads {
            if thread.join().is_err() {
                // Its runtime was dropped while unwinding, which waits for the kernel: nothing
                // it lent to the kernel is still in use.
                tracing::error!("a diskio-uring executor thread had panicked");
            }
        }
        drop(self.files.clear());
    }
}
