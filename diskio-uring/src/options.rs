//! The tokio-uring backend's options.

use std::time::Duration;

use diskio::Result;
use diskio::backend::{check_common, check_within};

/// Most executor threads accepted.
pub const EXECUTORS_MAX: usize = 64;

/// Largest ring (submission queue entries) accepted.
pub const ENTRIES_MAX: u32 = 4096;

/// Largest queue and in-flight limits accepted (per executor).
pub const QUEUE_MAX: usize = 65_536;

/// Options of a [`UringDisk`](crate::UringDisk).
#[derive(Debug, Clone)]
pub struct UringOptions {
    pub(crate) executors: usize,
    pub(crate) entries: u32,
    pub(crate) queue_max: usize,
    pub(crate) in_flight_max: usize,
    pub(crate) alignment: usize,
    pub(crate) spin: Duration,
    pub(crate) lone_sync_here: bool,
    pub(crate) thread_name: String,
}

impl Default for UringOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl UringOptions {
    /// One executor thread with a submission queue of 8 entries (see
    /// [`entries`](Self::entries)), up to 256 jobs in flight and 1024 queued; buffers aligned to 4096; 100 µs of spinning (see [`spin`](Self::spin)).
    pub fn new() -> Self {
        Self {
            executors: 1,
            entries: 8,
            queue_max: 1024,
            in_flight_max: 256,
            alignment: 4096,
            spin: Duration::from_micros(100),
            lone_sync_here: true,
            thread_name: "diskio-uring".to_owned(),
        }
    }

    /// Executor threads, each with its own ring (1..=[`EXECUTORS_MAX`]). Files are spread
    /// over them round-robin at open.
    pub fn executors(mut self, n: usize) -> Self {
        self.executors = n;
        self
    }

    /// Submission queue entries of each ring (1..=[`ENTRIES_MAX`]). tokio-uring hands queued
    /// operations to the kernel only when its thread goes idle or the queue is full, so under
    /// load this is how many operations may wait to be submitted: a small queue submits sooner.
    /// Measured here at 32 reads in flight, 8 entries gave 0.78–0.82× fio's `O_DIRECT` IOPS and
    /// 0.55× `diskio-raw` from the page cache, against 0.70× and 0.48× with 256. The completion
    /// queue is sized for every job in flight either way.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }

    /// Jobs waiting in each executor's queue, not yet started, before callers wait
    /// (1..=[`QUEUE_MAX`]). With [`in_flight_max`](Self::in_flight_max), an executor holds at
    /// most `queue_max + in_flight_max` operations.
    pub fn queue_max(mut self, n: usize) -> Self {
        self.queue_max = n;
        self
    }

    /// Jobs each executor runs at once (1..=[`QUEUE_MAX`]).
    pub fn in_flight_max(mut self, n: usize) -> Self {
        self.in_flight_max = n;
        self
    }

    /// Alignment of buffers from [`alloc`](diskio::DiskIo::alloc): a power of two in
    /// 512..=1 MiB.
    pub fn alignment(mut self, alignment: usize) -> Self {
        self.alignment = alignment;
        self
    }

    /// How long an idle party polls before it sleeps (at most 100 ms; zero turns it off):
    /// an executor with no job running polls its queue for a new job, and a caller alone in
    /// flight polls for its answer. At queue depth 1 this saves the two thread wake-ups of each
    /// operation (tens of microseconds on a virtual machine) for a little CPU time; under load
    /// neither polls.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Whether a durable operation (`write_sync_at`, `fsync` of
    /// [`SyncKind::Data`](diskio::SyncKind::Data)) that is alone (no other caller in flight,
    /// nothing queued or running on the file's executor) makes its system calls on its caller's
    /// thread, when that thread is a worker of a multi-thread Tokio runtime (default: on). A
    /// full `fsync` ([`SyncKind::All`](diskio::SyncKind::All)) always goes to the executor: it
    /// writes the file's metadata too, which after a large write of new blocks can take tens of
    /// ms, and a runtime worker blocked that long holds up the task it woke last, which no
    /// other worker steals.
    ///
    /// Through the executor, a lone write + sync takes a hop to the executor thread, two
    /// submissions (tokio-uring links nothing and takes no `RWF_DSYNC`), the kernel worker that
    /// io_uring runs every `FSYNC` on, and a hop back: 0.40-0.54x the IOPS of a thread calling
    /// `pwrite` + `fdatasync` itself, measured here. Run on the caller's thread, it is that
    /// thread's work. The price is the blocking backend's: the runtime thread is blocked for
    /// the length of the sync. Under load every operation goes through the executors.
    pub fn lone_sync_here(mut self, on: bool) -> Self {
        self.lone_sync_here = on;
        self
    }

    /// Name prefix of the executor threads (`<name>-0`, `<name>-1`, ...).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_within("executors", self.executors, 1, EXECUTORS_MAX)?;
        check_within("entries", self.entries, 1, ENTRIES_MAX)?;
        check_within("queue_max", self.queue_max, 1, QUEUE_MAX)?;
        check_within("in_flight_max", self.in_flight_max, 1, QUEUE_MAX)?;
        check_common(self.alignment, &[("spin", self.spin)])
    }
}
