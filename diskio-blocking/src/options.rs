//! The blocking backend's options.

use std::time::Duration;

use diskio::Result;
use diskio::backend::{check_common, check_within};

/// Most worker threads a pool may have.
pub const THREADS_MAX: usize = 1024;

/// Largest in-flight limit (operations accepted and not finished) a pool may have.
pub const IN_FLIGHT_MAX: usize = 1 << 20;

/// Options of a [`BlockingDisk`](crate::BlockingDisk).
#[derive(Debug, Clone)]
pub struct BlockingOptions {
    pub(crate) threads: usize,
    pub(crate) in_flight_max: usize,
    pub(crate) alignment: usize,
    pub(crate) spin: Duration,
    pub(crate) lone_sync_here: bool,
    pub(crate) dsync_write: bool,
    pub(crate) thread_name: String,
}

impl Default for BlockingOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockingOptions {
    /// 32 threads (enough to keep 32 reads in flight on a device), at most 1024 operations in
    /// flight, buffers aligned to 4096, and 50 µs of spinning (see [`spin`](Self::spin)).
    pub fn new() -> Self {
        Self {
            threads: 32,
            in_flight_max: 1024,
            alignment: 4096,
            spin: Duration::from_micros(50),
            lone_sync_here: true,
            dsync_write: true,
            thread_name: "diskio-blocking".to_owned(),
        }
    }

    /// Number of worker threads: the most system calls in flight at once (1..=[`THREADS_MAX`]).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Most operations accepted and not yet finished (queued for a thread plus running); callers
    /// beyond it wait, in order (1..=[`IN_FLIGHT_MAX`]).
    pub fn in_flight_max(mut self, in_flight_max: usize) -> Self {
        self.in_flight_max = in_flight_max;
        self
    }

    /// Alignment of buffers from `alloc` (a power of two, 512..=1 MiB).
    pub fn alignment(mut self, alignment: usize) -> Self {
        self.alignment = alignment;
        self
    }

    /// How long one idle worker polls for new work before sleeping, and how long a caller that is
    /// alone in the queue polls for its result before yielding to its runtime. Spinning saves two
    /// wake-ups (several µs each) per operation at queue depth 1 and costs CPU while idle (one
    /// worker at most, and the caller's runtime thread for at most this long); 0 disables it.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Whether a durable operation (`write_sync_at`, `fsync` of
    /// [`SyncKind::Data`](diskio::SyncKind::Data)) that is alone in flight runs on its caller's
    /// thread rather than a worker, when that thread is a worker of a multi-thread Tokio
    /// runtime (default: on). A full `fsync` ([`SyncKind::All`](diskio::SyncKind::All)) always
    /// goes to a worker: it writes the file's metadata too, which after a large write of new
    /// blocks can take tens of ms, and a runtime worker blocked that long holds up the task it
    /// woke last, which no other worker steals (see the raw backend's `lone_sync_here` for what
    /// that did to 1,024 WAL writers).
    ///
    /// At queue depth 1 a sync outlasts any spin, so handing it to a worker costs two thread
    /// wake-ups: tens of µs on a virtual machine, against a sync of about 100 µs. Run here, the
    /// operation is what a thread calling `pwrite` + `fdatasync` itself does. The price: the
    /// runtime thread is blocked for the length of the sync (its other tasks are taken over by
    /// the runtime's other workers), as with any blocking call. Turn it off where a slow device
    /// makes syncs long and the runtime has few workers. Under load (another operation in
    /// flight) every operation goes to the workers either way.
    pub fn lone_sync_here(mut self, on: bool) -> Self {
        self.lone_sync_here = on;
        self
    }

    /// Whether `write_sync_at` is one `pwritev2` with `RWF_DSYNC` (`RWF_SYNC` for
    /// [`SyncKind::All`](diskio::SyncKind::All)), which the kernel makes durable before it
    /// returns (default: on, on Linux), rather than `pwritev` followed by `fdatasync` (`fsync`).
    ///
    /// On an `O_DIRECT` file over blocks already written (as the WAL's zero-filled segments
    /// are) the kernel sends the write down as one FUA write, with no journal commit and no
    /// separate cache flush: cheaper than a write and a flush. On a buffered file it writes the
    /// range back and flushes, as `fdatasync` would, in one system call. What it makes durable
    /// is this write only; earlier buffered writes elsewhere in the file are not flushed with it
    /// (call [`fsync`](diskio::DiskIo::fsync) for those). Off, or off Linux, the write is
    /// followed by a sync of the whole file.
    pub fn dsync_write(mut self, on: bool) -> Self {
        self.dsync_write = on;
        self
    }

    /// Prefix of the worker threads' names.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_within("threads", self.threads, 1, THREADS_MAX)?;
        check_within("in_flight_max", self.in_flight_max, 1, IN_FLIGHT_MAX)?;
        check_common(self.alignment, &[("spin", self.spin)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_are_refused() {
        for bad in [
            BlockingOptions::new().threads(0),
            BlockingOptions::new().threads(THREADS_MAX + 1),
            BlockingOptions::new().in_flight_max(0),
            BlockingOptions::new().alignment(3000),
            BlockingOptions::new().spin(Duration::from_millis(101)),
        ] {
            assert!(
                matches!(bad.validate(), Err(diskio::Error::InvalidInput { .. })),
                "{bad:?}"
            );
        }
        assert!(BlockingOptions::new().validate().is_ok());
    }
}
