//! The raw backend's options.

use diskio::backend::{check_at_most, check_common, check_within};
use diskio::{Context, Error, Op, Result};

/// Largest ring (submission queue entries) accepted.
pub const ENTRIES_MAX: u32 = 4096;

/// Largest in-flight limit accepted.
pub const IN_FLIGHT_MAX: usize = 32_768;

/// Most registered files / fixed buffers the kernel takes in one table.
pub(crate) const TABLE_MAX: usize = 16_384;

/// Options of a [`RawDisk`](crate::RawDisk).
#[derive(Debug, Clone)]
pub struct RawOptions {
    pub(crate) entries: u32,
    pub(crate) in_flight_max: usize,
    pub(crate) sqpoll_idle_ms: Option<u32>,
    pub(crate) fixed_buffers: usize,
    pub(crate) fixed_buffer_bytes: usize,
    pub(crate) registered_files: usize,
    pub(crate) alignment: usize,
    pub(crate) spin: std::time::Duration,
    pub(crate) lone_wait: std::time::Duration,
    pub(crate) linked_sync: bool,
    pub(crate) lone_sync_here: bool,
    pub(crate) thread_name: String,
}

impl Default for RawOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RawOptions {
    /// A ring of 256 entries, at most 1024 operations in flight, no `SQPOLL`, 64 fixed buffers
    /// of 64 KiB (4 MiB of registered memory, within the usual 8 MiB `RLIMIT_MEMLOCK`), 1024
    /// registered file slots, buffers aligned to 4096.
    pub fn new() -> Self {
        Self {
            entries: 256,
            in_flight_max: 1024,
            sqpoll_idle_ms: None,
            fixed_buffers: 64,
            fixed_buffer_bytes: 64 * 1024,
            registered_files: 1024,
            alignment: 4096,
            spin: std::time::Duration::from_micros(100),
            lone_wait: std::time::Duration::from_millis(1),
            linked_sync: false,
            lone_sync_here: true,
            thread_name: "diskio-raw".to_owned(),
        }
    }

    /// Submission queue entries (a power of two is used, 1..=[`ENTRIES_MAX`]). More operations
    /// than this may be in flight: the queue is flushed into the kernel when it fills.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }

    /// Most operations submitted and not completed (1..=[`IN_FLIGHT_MAX`]); further callers
    /// wait, in order. The completion queue is sized above it, so it never overflows.
    pub fn in_flight_max(mut self, n: usize) -> Self {
        self.in_flight_max = n;
        self
    }

    /// Turns on `SQPOLL`: a kernel thread polls the submission queue, and goes to sleep after
    /// `idle_ms` without work. Saves the submitting system call at the price of a busy kernel
    /// thread; off by default. At 32 `O_DIRECT` reads in flight it brought the IOPS from 0.88x
    /// to 0.95x fio's (medians of eight alternated pairs) for about three times the CPU per
    /// read.
    pub fn sqpoll(mut self, idle_ms: Option<u32>) -> Self {
        self.sqpoll_idle_ms = idle_ms;
        self
    }

    /// Number of buffers of the registered (fixed) pool; 0 turns fixed buffers off.
    pub fn fixed_buffers(mut self, count: usize) -> Self {
        self.fixed_buffers = count;
        self
    }

    /// Capacity of each fixed buffer: `alloc` of up to this many bytes returns one.
    pub fn fixed_buffer_bytes(mut self, bytes: usize) -> Self {
        self.fixed_buffer_bytes = bytes;
        self
    }

    /// Slots of the registered file table; 0 turns registered files off.
    pub fn registered_files(mut self, count: usize) -> Self {
        self.registered_files = count;
        self
    }

    /// Alignment of buffers from `alloc` (a power of two, 512..=1 MiB).
    pub fn alignment(mut self, alignment: usize) -> Self {
        self.alignment = alignment;
        self
    }

    /// How long a caller whose operation is the only one in flight polls the completion queue
    /// before sleeping (default 100 µs). At queue depth 1 this saves two thread hops per
    /// operation (the reaper's wake-up and the task's); it never happens under load, and costs
    /// the calling thread at most this much CPU per operation. 0 disables it.
    pub fn spin(mut self, spin: std::time::Duration) -> Self {
        self.spin = spin;
        self
    }

    /// How long a caller whose operation is the only one in flight then sleeps in
    /// `io_uring_enter` for it (default 1 ms), before handing it to the reaper thread. Syncs,
    /// opens and preallocations skip the polling and sleep at once, leaving the CPU to the kernel
    /// worker that runs them. The thread sleeps without using CPU, but it is the caller's: on a
    /// multi-thread Tokio runtime other workers take over its queued tasks; on a current-thread
    /// runtime this sleep is skipped. 0 disables it.
    pub fn lone_wait(mut self, wait: std::time::Duration) -> Self {
        self.lone_wait = wait;
        self
    }

    /// Makes [`write_sync_at`](diskio::DiskIo::write_sync_at) a `WRITEV` linked to an `FSYNC`
    /// (two operations in one submission) instead of the default, one `WRITEV` with
    /// `RWF_DSYNC` (`RWF_SYNC` for [`SyncKind::All`](diskio::SyncKind::All)).
    ///
    /// The default is the faster: the kernel always runs an `FSYNC` on one of its worker
    /// threads, one more hand-off, while a `RWF_DSYNC` write syncs in the submitting context
    /// (on an `O_DIRECT` file over written blocks, as one FUA write). Measured here, 4 KiB at
    /// queue depth 1 on ext4: the linked chain gave 0.68-0.73x the IOPS of a thread calling
    /// `pwrite` and `fdatasync`, the `RWF_DSYNC` write 0.90-0.91x. Both are equally durable.
    pub fn linked_sync(mut self, linked: bool) -> Self {
        self.linked_sync = linked;
        self
    }

    /// Whether a durable operation (`write_sync_at`, `fsync` of
    /// [`SyncKind::Data`](diskio::SyncKind::Data)) that is alone in flight makes its system call
    /// on its caller's thread instead of going through the ring, when that thread is a worker of
    /// a multi-thread Tokio runtime (default: on). `write_sync_at` is then one `pwritev2` with
    /// `RWF_DSYNC` (`RWF_SYNC` for [`SyncKind::All`](diskio::SyncKind::All)); with
    /// [`linked_sync`](Self::linked_sync) every `write_sync_at` goes through the ring (a lone
    /// `fsync` of data still runs here). A full `fsync` (`SyncKind::All`) always goes through
    /// the ring: it writes the file's metadata too, which after a large write of new blocks
    /// can take tens of ms, and a worker blocked that long holds up the task it woke last
    /// (which no other worker steals). With 1,024 WAL writers, every appender stalled for
    /// 24-33 ms each time the log's next segment (64 MiB of new blocks) was synced after its
    /// fill; with the full sync on the ring, those stalls were gone.
    ///
    /// Through the ring, a durable write on a device without FUA (`/sys/block/*/queue/fua` is 0,
    /// as on many virtual disks) completes in two steps: the kernel finishes the `O_DIRECT`
    /// write, then hands the sync to a kernel worker before it posts the completion; an `FSYNC`
    /// always goes to one. On the caller's thread the same call writes and syncs in place.
    /// Measured on such a disk, 4 KiB at queue depth 1: through the ring 0.37-0.86x the IOPS of a
    /// thread calling `pwrite` + `fdatasync` (p50 1.23-1.65x); see the crate docs for the
    /// figures with it on. With FUA, both are one FUA write. The price is the blocking backend's:
    /// the runtime thread is blocked for the length of the sync (the runtime's other workers
    /// take over most of its queued tasks). Under load every operation goes through the ring
    /// either way.
    pub fn lone_sync_here(mut self, on: bool) -> Self {
        self.lone_sync_here = on;
        self
    }

    /// Name of the reaper thread.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_within("entries", self.entries, 1, ENTRIES_MAX)?;
        check_within("in_flight_max", self.in_flight_max, 1, IN_FLIGHT_MAX)?;
        check_at_most("fixed_buffers", self.fixed_buffers, TABLE_MAX)?;
        if self.fixed_buffers > 0 && !(1..=1 << 30).contains(&self.fixed_buffer_bytes) {
            return Err(Error::InvalidInput {
                ctx: Context::new(Op::Setup),
                reason: format!(
                    "fixed_buffer_bytes must be 1..=1 GiB, not {}",
                    self.fixed_buffer_bytes
                ),
            });
        }
        check_at_most("registered_files", self.registered_files, TABLE_MAX)?;
        check_common(
            self.alignment,
            &[("spin", self.spin), ("lone_wait", self.lone_wait)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_are_refused() {
        for bad in [
            RawOptions::new().entries(0),
            RawOptions::new().entries(ENTRIES_MAX + 1),
            RawOptions::new().in_flight_max(0),
            RawOptions::new().alignment(3000),
            RawOptions::new().fixed_buffers(TABLE_MAX + 1),
            RawOptions::new().registered_files(TABLE_MAX + 1),
            RawOptions::new().spin(std::time::Duration::from_millis(101)),
            RawOptions::new().lone_wait(std::time::Duration::from_millis(101)),
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidInput { .. })),
                "{bad:?}"
            );
        }
        assert!(RawOptions::new().validate().is_ok());
    }
}
