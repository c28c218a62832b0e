//! # diskio-raw
//!
//! The fast [`DiskIo`](diskio::DiskIo) backend: diskio's own io_uring ring, driven through the `io-uring` crate,
//! with **registered files**, **fixed buffers**, `O_DIRECT`, **batched submission** and
//! `write_sync_at` as **one `RWF_DSYNC` write** (or a linked `WRITEV` → `FSYNC`), behind `Send` futures that
//! run on any Tokio runtime (current-thread or multi-thread, any number of them).
//!
//! ## How it works, and why
//!
//! One ring per [`RawDisk`], shared by every task:
//!
//! - **Callers submit and reap themselves.** An operation takes in-flight permits (a fair
//!   semaphore: excess callers wait in order), records its buffers in a slot of the ring's table,
//!   pushes its SQE and calls `io_uring_enter`. A caller that pushes while another one is in
//!   that call leaves its SQE to it, and that caller enters again before it stops (at most eight
//!   times, then the next caller takes over). So under load one `io_uring_enter` carries
//!   several operations through one block-layer plug and one doorbell for the device, and
//!   callers do not spin on the kernel's ring lock: at 32 `O_DIRECT` reads in flight this cut
//!   the CPU per read from 11.1 to 7.3 µs (medians of eight alternated pairs), with 2.7 reads
//!   per plug where there was one. A read served by the page cache completes inside that call,
//!   so the caller finds its completion at once (or the caller that submitted it hands it over
//!   as it leaves) without any thread hop: this is what makes cached reads cheap.
//! - **A reaper thread waits for the rest.** Device I/O and syncs complete later; one thread per
//!   ring waits in `io_uring_enter(GETEVENTS)` while anything is outstanding, records the
//!   results and wakes the tasks (one wake-up, as for any I/O on Tokio). With nothing
//!   outstanding it sleeps, so it costs nothing to the cached path.
//! - **A lone operation's caller waits for it itself.** When an operation is the only one in
//!   flight, handing it to the reaper costs two wake-ups (the reaper's, then the task's), tens
//!   of microseconds on a virtual machine. Instead its caller polls for up to
//!   [`RawOptions::spin`] (reads and writes only), then sleeps in `io_uring_enter` for up to
//!   [`RawOptions::lone_wait`], waiting for as many completions as the operation expects (a
//!   linked write and sync wake it once). Durable writes and syncs that take this path skip
//!   the polling: they wait for the device's flush, and a sync runs on a kernel worker thread
//!   that needs the CPU. Under load neither happens.
//! - **A lone durable operation runs on its caller's thread.** A `write_sync_at` or an `fsync`
//!   of data (a full `fsync` always goes through the ring) alone in flight, called from a
//!   worker of a multi-thread Tokio runtime, is one system call right there
//!   (`fdatasync`/`fsync`, or `pwritev2` with `RWF_DSYNC`), as the blocking and
//!   tokio-uring backends do ([`RawOptions::lone_sync_here`]). Through the ring an `FSYNC` always
//!   runs on a kernel worker thread, and so does the sync of a `RWF_DSYNC` write on a device
//!   without FUA (many virtual disks: `/sys/block/*/queue/fua` is 0), which the kernel starts
//!   only after the write's completion. Measured on such a disk, 4 KiB + sync at queue depth 1,
//!   three alternated invocations: p50 0.91-1.03x a thread calling `pwrite` + `fdatasync`,
//!   against 1.28-1.57x through the ring; the WAL's durable single writer on raw went from
//!   0.77-0.85x to 0.89-0.91x okaywal's records/s. On a device with FUA both are one FUA write.
//!
//! A ring per Tokio worker would save the reaper's hop on device I/O but ties the backend to
//! one runtime's threads; the ring's descriptor watched by the Tokio reactor ties it to the
//! runtime that registered it (and a runtime built without `enable_io` has no reactor). A
//! prototype whose reaping ran as a task woken by the reactor (the reaper thread as a
//! backstop) gave 0.91x fio's IOPS at 32 `O_DIRECT` reads in flight against 0.87x for the
//! reaper thread, for 6% more CPU per read, over fourteen alternated pairs (0.92 against 0.87
//! in a first set of six, 0.89 against 0.88 in the next eight): not kept for now.
//! `IORING_SETUP_COOP_TASKRUN` (no interrupt of a running submitter) gave 0.87x against 0.92x
//! over eight pairs. Part of the hop is the kernel's: it finishes a read's completion on the
//! thread that submitted it, waking that thread first. The design above works from any runtime
//! and from several at once, and the figures in the README show what it costs against fio;
//! [`RawOptions::sqpoll`] takes the submissions, and the completions' first step, off the
//! callers' threads and comes closer to fio (median 0.95x over eight alternated pairs, against
//! 0.88x without) for about three times the CPU per read (20.7 µs against 7.3).
//!
//! ## What the kernel sees
//!
//! - **Registered files**: each open file takes a slot of a sparse registered file table
//!   ([`RawOptions::registered_files`]), and operations on it use fixed-file SQEs. A file that
//!   gets no slot (table full) uses its descriptor.
//! - **Fixed buffers**: [`alloc`](diskio::DiskIo::alloc) hands out buffers from a pinned pool
//!   whose memory is registered with the ring; reads and writes of those use
//!   `READ_FIXED`/`WRITE_FIXED`. Any other [`AlignedBuf`] works through the ordinary opcodes. If registration fails (for example
//!   `RLIMIT_MEMLOCK`), the backend works without and says so in [`RawDisk::setup`] and a
//!   `tracing` warning.
//! - **`write_sync_at`** (under load, or with [`RawOptions::lone_sync_here`] off) is one
//!   `WRITEV` with `RWF_DSYNC` (`RWF_SYNC` for
//!   [`SyncKind::All`](diskio::SyncKind::All)): the kernel syncs the written range before the
//!   write completes, in the submitting context, where an `FSYNC` always goes to a kernel worker
//!   thread. On an `O_DIRECT` file over written blocks (the WAL's segments) it is one FUA write.
//!   Measured on ext4 in a VM, 4 KiB at queue depth 1: 0.90-0.91x the IOPS of a thread calling
//!   `pwrite` + `fdatasync` (p50 1.08-1.10x), where the linked chain gave 0.68-0.73x (p50
//!   1.45-1.50x); the WAL's durable single writer went from 0.73x to 1.01-1.09x okaywal's
//!   records/s. [`RawOptions::linked_sync`] chooses `WRITEV` linked to `FSYNC` (`DATASYNC` for
//!   [`SyncKind::Data`](diskio::SyncKind::Data)) instead. Either way a failed write reports
//!   the write's error (for a `RWF_DSYNC` write, also when the sync it carries failed: the
//!   errno tells); a short write is finished and then synced; success is reported only for
//!   synced data.
//! - **`O_DIRECT`**: each file's alignment comes from `statx(STATX_DIOALIGN)` (4096 when the
//!   kernel does not say) and every transfer is checked before it is submitted.
//! - Opens use `OPENAT`, syncs `FSYNC`, preallocation `FALLOCATE`, set length `FTRUNCATE`
//!   (Linux 6.9+; on older kernels `ftruncate(2)` runs on the calling thread, said in
//!   [`RawDisk::setup`]). File length is an `fstat` on the calling thread (it never waits for the
//!   device).
//!
//! ## Safety of memory
//!
//! Dropping a future never frees memory the kernel may use: the slot keeps the buffers until
//! the kernel's completion arrives, and then frees them. Dropping the last handle shuts the ring
//! down: the reaper waits for every operation in flight, then the ring and all memory go.
//!
//! ## When io_uring is not available
//!
//! [`RawDisk::new`] fails with [`Error::Unsupported`] and a reason a person can act on
//! (`kernel.io_uring_disabled`, a seccomp profile refusing `io_uring_setup`, locked memory, a
//! missing opcode). Setting the environment variable `DISKIO_RAW_DISABLE` to any non-empty value
//! makes construction fail the same way, so a service can be made to take its fallback path.
//!
//! ```
//! use diskio::{DiskIo, OpenOptions, SyncKind};
//! use diskio_raw::{RawDisk, RawOptions};
//!
//! # let dir = std::env::temp_dir().join(format!("diskio-raw-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let disk = match RawDisk::new(RawOptions::new()) {
//!     Ok(disk) => disk,
//!     Err(e) => {
//!         eprintln!("no io_uring here: {e}");
//!         return Ok(());
//!     }
//! };
//! let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! rt.block_on(async {
//!     let file = disk.open(&dir.join("log"), &OpenOptions::read_write_create()).await?;
//!     let mut buf = disk.alloc(5)?;
//!     buf.copy_from_slice(b"hello");
//!     // One write that the kernel makes durable before it completes (RWF_DSYNC).
//!     let (res, _bufs) = disk.write_sync_at(file, vec![buf], 0, SyncKind::Data).await;
//!     assert_eq!(res?, 5);
//!     disk.close(file).await
//! })?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), diskio::Error>(())
//! ```

#![deny(unsafe_code)]

mod files;
#[allow(unsafe_code)] // hands SQEs (and the memory they name) to the kernel
mod ops;
mod options;
#[allow(unsafe_code)] // the ring: submission and completion queues shared with the kernel
mod ring;
#[allow(unsafe_code)] // registers pinned buffer memory with the kernel
mod setup;

use std::sync::Arc;
use std::thread::JoinHandle;

use diskio::backend::{FileTable, Stats};
use diskio::{AlignedBuf, BufPool, Context, Error, Op, Result};

use crate::files::{FileSlots, OpenFile};
pub use crate::options::{ENTRIES_MAX, IN_FLIGHT_MAX, RawOptions};
use crate::ring::Ring;
pub use crate::setup::{DISABLE_ENV, Setup};
pub use diskio_blocking::AutoDisk;

/// The io_uring backend. Cheap to clone: clones share the ring, its thread, files and stats.
#[derive(Clone)]
pub struct RawDisk {
    inner: Arc<Inner>,
}

struct Inner {
    ring: Arc<Ring>,
    files: FileTable<OpenFile>,
    slots: Arc<FileSlots>,
    /// Registered buffers; `None` when registration failed or was turned off.
    fixed: Option<BufPool>,
    stats: Stats,
    alignment: usize,
    /// `write_sync_at` as a linked `WRITEV` → `FSYNC` ([`RawOptions::linked_sync`]).
    linked_sync: bool,
    /// A lone durable operation runs on its caller's thread ([`RawOptions::lone_sync_here`]).
    lone_sync_here: bool,
    setup: Setup,
    reaper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RawDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDisk")
            .field("setup", &self.inner.setup)
            .finish_non_exhaustive()
    }
}

/// Counters of the ring, for judging the batching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    /// `io_uring_enter` calls made by callers to submit.
    pub enters: u64,
    /// SQEs those calls submitted.
    pub sqes: u64,
    /// Times the reaper waited in the kernel for completions.
    pub reaper_waits: u64,
}

impl RingStats {
    /// Average SQEs per submitting `io_uring_enter` (0 before any).
    pub fn sqes_per_enter(&self) -> f64 {
        if self.enters == 0 {
            0.0
        } else {
            self.sqes as f64 / self.enters as f64
        }
    }
}

impl RawDisk {
    /// Creates the ring, registers the file table and the fixed buffers, and starts the reaper
    /// thread.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for options out of range; [`Error::Unsupported`] with the reason
    /// when io_uring cannot be used here; [`Error::Io`] if the thread cannot be spawned.
    pub fn new(options: RawOptions) -> Result<Self> {
        let built = setup::build(&options)?;
        let ring = Arc::new(Ring::new(
            built.uring,
            options.in_flight_max,
            options.spin,
            options.lone_wait,
        ));
        let (fixed, setup) = setup::register(&ring, &options, built.setup);
        let slots = Arc::new(FileSlots::new(Arc::clone(&ring), setup.registered_files));
        let reaper_ring = Arc::clone(&ring);
        let reaper = std::thread::Builder::new()
            .name(options.thread_name.clone())
            .spawn(move || reaper_ring.reap_until_shutdown())
            .map_err(|e| Error::io(Context::new(Op::Setup), e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                ring,
                files: FileTable::new(),
                slots,
                fixed,
                stats: Stats::new(),
                alignment: options.alignment,
                linked_sync: options.linked_sync,
                lone_sync_here: options.lone_sync_here,
                setup,
                reaper: Some(reaper),
            }),
        })
    }

    /// With [`RawOptions::new`].
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_defaults() -> Result<Self> {
        Self::new(RawOptions::new())
    }

    /// What the ring got at construction: fixed buffers, registered files, `SQPOLL`, and why
    /// something is missing.
    pub fn setup(&self) -> &Setup {
        &self.inner.setup
    }

    /// Submission counters of the ring.
    pub fn ring_stats(&self) -> RingStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.inner.ring.counters;
        RingStats {
            enters: c.enters.load(Relaxed),
            sqes: c.sqes.load(Relaxed),
            reaper_waits: c.waits.load(Relaxed),
        }
    }

    fn alloc_buf(&self, len: usize) -> Result<AlignedBuf> {
        match &self.inner.fixed {
            Some(pool) if len <= pool.buf_bytes() => pool.get_zeroed(len),
            _ => AlignedBuf::zeroed(len, self.inner.alignment),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ring.shutdown();
        if let Some(reaper) = self.reaper.take() {
            if reaper.join().is_err() {
                // Operations may still be in flight: leak the ring and everything its slots
                // hold rather than free memory the kernel may write.
                tracing::error!("the ring's reaper thread panicked; leaking the ring");
                std::mem::forget(Arc::clone(&self.ring));
                return;
            }
        }
        // Every operation has completed: files and buffers can go, then the ring.
        drop(self.files.clear());
    }
}

/// The raw backend if io_uring works here, else the blocking backend, with the reason logged
/// (`tracing` warning) and returned: [`diskio_blocking::fallback`] with this backend. Only
/// [`Error::Unsupported`] falls back: bad options are still an error.
///
/// # Errors
///
/// [`Error::InvalidInput`] for bad options; errors of the blocking backend's construction.
pub fn auto(raw: RawOptions, blocking: diskio_blocking::BlockingOptions) -> Result<AutoDisk> {
    diskio_blocking::fallback(RawDisk::new(raw), blocking)
}
