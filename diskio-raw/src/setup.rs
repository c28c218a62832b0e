//! Options, ring creation, probing and registration.

use std::io;

use diskio::{BufPool, Context, Error, Op, Result};
use io_uring::{IoUring, opcode};

use crate::ring::Ring;

/// Largest ring (submission queue entries) accepted.
pub const ENTRIES_MAX: u32 = 4096;

/// Largest in-flight limit accepted.
pub const IN_FLIGHT_MAX: usize = 32_768;

/// Most registered files / fixed buffers the kernel takes in one table.
const TABLE_MAX: usize = 16_384;

/// Options of a [`RawDisk`](crate::RawDisk).
#[derive(Debug, Clone)]
pub struct RawOptions {
    entries: u32,
    in_flight_max: usize,
    sqpoll_idle_ms: Option<u32>,
    fixed_buffers: usize,
    fixed_buffer_bytes: usize,
    registered_files: usize,
    alignment: usize,
    spin: std::time::Duration,
    lone_wait: std::time::Duration,
    thread_name: String,
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
    /// thread; off by default.
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

    /// Name of the reaper thread.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    pub(crate) fn in_flight_max_value(&self) -> usize {
        self.in_flight_max
    }

    pub(crate) fn spin_value(&self) -> std::time::Duration {
        self.spin
    }

    pub(crate) fn lone_wait_value(&self) -> std::time::Duration {
        self.lone_wait
    }

    pub(crate) fn alignment_value(&self) -> usize {
        self.alignment
    }

    pub(crate) fn thread_name_value(&self) -> &str {
        &self.thread_name
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::InvalidInput {
            ctx: Context::new(Op::Setup),
            reason,
        };
        if !(1..=ENTRIES_MAX).contains(&self.entries) {
            return Err(bad(format!(
                "entries must be 1..={ENTRIES_MAX}, not {}",
                self.entries
            )));
        }
        if !(1..=IN_FLIGHT_MAX).contains(&self.in_flight_max) {
            return Err(bad(format!(
                "in_flight_max must be 1..={IN_FLIGHT_MAX}, not {}",
                self.in_flight_max
            )));
        }
        if self.fixed_buffers > TABLE_MAX {
            return Err(bad(format!(
                "fixed_buffers must be at most {TABLE_MAX}, not {}",
                self.fixed_buffers
            )));
        }
        if self.fixed_buffers > 0 && !(1..=1 << 30).contains(&self.fixed_buffer_bytes) {
            return Err(bad(format!(
                "fixed_buffer_bytes must be 1..=1 GiB, not {}",
                self.fixed_buffer_bytes
            )));
        }
        if self.registered_files > TABLE_MAX {
            return Err(bad(format!(
                "registered_files must be at most {TABLE_MAX}, not {}",
                self.registered_files
            )));
        }
        if self.spin > std::time::Duration::from_millis(100) {
            return Err(bad(format!(
                "spin must be at most 100 ms, not {:?}",
                self.spin
            )));
        }
        if self.lone_wait > std::time::Duration::from_millis(100) {
            return Err(bad(format!(
                "lone_wait must be at most 100 ms, not {:?}",
                self.lone_wait
            )));
        }
        if !self.alignment.is_power_of_two()
            || !(512..=diskio::BUF_ALIGN_MAX).contains(&self.alignment)
        {
            return Err(bad(format!(
                "alignment must be a power of two in 512..=1 MiB, not {}",
                self.alignment
            )));
        }
        Ok(())
    }
}

/// What the ring got at construction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Setup {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// `SQPOLL` is on.
    pub sqpoll: bool,
    /// Fixed buffers registered (0 when off or refused).
    pub fixed_buffers: usize,
    /// Why fixed buffers are off, if they are.
    pub fixed_buffers_missing: Option<String>,
    /// Registered file slots (0 when off or refused).
    pub registered_files: u32,
    /// Why registered files are off, if they are.
    pub registered_files_missing: Option<String>,
    /// `set_len` is an `FTRUNCATE` submission (else `ftruncate(2)` on the calling thread).
    pub ftruncate_op: bool,
}

pub(crate) struct Built {
    pub(crate) uring: IoUring,
    pub(crate) setup: Setup,
}

/// Opcodes the backend cannot work without.
const NEEDED: [(u8, &str); 9] = [
    (opcode::Nop::CODE, "NOP"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::ReadFixed::CODE, "READ_FIXED"),
    (opcode::WriteFixed::CODE, "WRITE_FIXED"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::Fallocate::CODE, "FALLOCATE"),
    (opcode::OpenAt::CODE, "OPENAT"),
];

/// The environment variable that turns the backend off.
pub const DISABLE_ENV: &str = "DISKIO_RAW_DISABLE";

/// Creates and probes the ring.
pub(crate) fn build(options: &RawOptions) -> Result<Built> {
    options.validate()?;
    if std::env::var_os(DISABLE_ENV).is_some_and(|v| !v.is_empty()) {
        return Err(Error::Unsupported {
            reason: format!(
                "diskio-raw is turned off by the {DISABLE_ENV} environment variable; unset it \
                 to use io_uring"
            ),
        });
    }
    let entries = options.entries.next_power_of_two();
    // Room for every operation in flight, each chain's SQEs, and the shutdown NOP.
    let cq = (options.in_flight_max + 16)
        .max(2 * entries as usize)
        .next_power_of_two();
    let cq = u32::try_from(cq).unwrap_or(u32::MAX);
    let mut builder = IoUring::builder();
    builder.setup_cqsize(cq).setup_submit_all();
    if let Some(idle) = options.sqpoll_idle_ms {
        builder.setup_sqpoll(idle);
    }
    let uring = match builder.build(entries) {
        Ok(uring) => uring,
        // Kernels before 5.18 refuse SUBMIT_ALL; everything else works without it.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq);
            if let Some(idle) = options.sqpoll_idle_ms {
                builder.setup_sqpoll(idle);
            }
            builder.build(entries).map_err(|e| unsupported(&e))?
        }
        Err(e) => return Err(unsupported(&e)),
    };
    let mut probe = io_uring::Probe::new();
    uring
        .submitter()
        .register_probe(&mut probe)
        .map_err(|e| Error::Unsupported {
            reason: format!(
                "the kernel cannot list its io_uring opcodes ({e}); Linux 5.6 or later is needed"
            ),
        })?;
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Unsupported {
            reason: format!(
                "the kernel's io_uring lacks {}; Linux 5.6 or later is needed (use the \
                 blocking backend here)",
                missing.join(", ")
            ),
        });
    }
    let params = uring.params();
    let setup = Setup {
        sq_entries: params.sq_entries(),
        cq_entries: params.cq_entries(),
        sqpoll: params.is_setup_sqpoll(),
        fixed_buffers: 0,
        fixed_buffers_missing: None,
        registered_files: 0,
        registered_files_missing: None,
        ftruncate_op: probe.is_supported(opcode::Ftruncate::CODE),
    };
    Ok(Built { uring, setup })
}

/// Registers the file table and the fixed buffers; what fails is noted, not fatal.
pub(crate) fn register(
    ring: &Ring,
    options: &RawOptions,
    mut setup: Setup,
) -> (Option<BufPool>, Setup) {
    let submitter = ring.uring().submitter();
    if options.registered_files > 0 {
        let count = options.registered_files as u32;
        match submitter.register_files_sparse(count) {
            Ok(()) => setup.registered_files = count,
            Err(e) => {
                let why = format!("registering {count} file slots failed: {e}");
                tracing::warn!("diskio-raw: {why}; files use plain descriptors");
                setup.registered_files_missing = Some(why);
            }
        }
    } else {
        setup.registered_files_missing = Some("turned off in the options".to_owned());
    }
    let mut fixed = None;
    if options.fixed_buffers > 0 {
        match register_buffers(ring, options) {
            Ok(pool) => {
                setup.fixed_buffers = options.fixed_buffers;
                fixed = Some(pool);
            }
            Err(why) => {
                tracing::warn!("diskio-raw: {why}; buffers use the ordinary opcodes");
                setup.fixed_buffers_missing = Some(why);
            }
        }
    } else {
        setup.fixed_buffers_missing = Some("turned off in the options".to_owned());
    }
    (fixed, setup)
}

fn register_buffers(ring: &Ring, options: &RawOptions) -> std::result::Result<BufPool, String> {
    let pool = BufPool::pinned(
        options.fixed_buffer_bytes,
        options.alignment,
        options.fixed_buffers,
    )
    .map_err(|e| format!("allocating the fixed buffers failed: {e}"))?;
    let iovecs: Vec<libc::iovec> = pool
        .pinned_regions()
        .into_iter()
        .map(|(base, len)| libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        })
        .collect();
    // SAFETY: the iovecs describe the pinned pool's memory, which stays allocated for as long
    // as the pool lives; the backend keeps the pool (`Inner::fixed`) until after the ring has
    // shut down, and buffers in flight keep it alive too.
    match unsafe { ring.uring().submitter().register_buffers(&iovecs) } {
        Ok(()) => Ok(pool),
        Err(e) => {
            let bytes = iovecs.iter().map(|v| v.iov_len).sum::<usize>();
            let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
                format!(
                    " (locked memory: {} KiB are needed, RLIMIT_MEMLOCK allows {}; raise \
                     `ulimit -l` or use fewer or smaller fixed buffers)",
                    bytes / 1024,
                    memlock_limit()
                )
            } else {
                String::new()
            };
            Err(format!(
                "registering {} fixed buffers failed: {e}{hint}",
                iovecs.len()
            ))
        }
    }
}

/// A reason a person can act on, for a failed `io_uring_setup`.
pub(crate) fn unsupported(e: &io::Error) -> Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    Error::Unsupported {
        reason: explain_setup_error(e, disabled.as_deref().map(str::trim)),
    }
}

/// Explains a failed `io_uring_setup`, given the value of `kernel.io_uring_disabled` if known.
pub fn explain_setup_error(e: &io::Error, io_uring_disabled: Option<&str>) -> String {
    match (e.raw_os_error(), io_uring_disabled) {
        (Some(libc::ENOSYS), _) => format!(
            "io_uring_setup is not available ({e}): the kernel is older than 5.1 or built \
             without io_uring; use the blocking backend"
        ),
        (Some(libc::EPERM), Some("2")) => format!(
            "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled = 2, {e}); \
             set it to 0 to use io_uring, or use the blocking backend"
        ),
        (Some(libc::EPERM), Some("1")) => format!(
            "io_uring is restricted to the group in sysctl kernel.io_uring_group \
             (kernel.io_uring_disabled = 1, {e}); add this user to that group, or use the \
             blocking backend"
        ),
        (Some(libc::EPERM), _) => format!(
            "io_uring_setup was refused ({e}): a seccomp profile (container runtimes block \
             io_uring by default) or a security module forbids it; allow io_uring_setup, \
             io_uring_enter and io_uring_register, or use the blocking backend"
        ),
        (Some(libc::ENOMEM), _) => format!(
            "no memory for the ring ({e}): RLIMIT_MEMLOCK is {} on kernels before 5.12; \
             raise `ulimit -l`, use fewer entries, or use the blocking backend",
            memlock_limit()
        ),
        _ => format!("io_uring_setup failed ({e}); use the blocking backend"),
    }
}

fn memlock_limit() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into memory we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        "unknown".to_owned()
    } else if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        format!("{} KiB", lim.rlim_cur / 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_name_the_cause_and_the_way_out() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let r = explain_setup_error(&eperm, Some("2"));
        assert!(r.contains("io_uring_disabled = 2"), "{r}");
        let r = explain_setup_error(&eperm, Some("1"));
        assert!(r.contains("io_uring_group"), "{r}");
        let r = explain_setup_error(&eperm, Some("0"));
        assert!(r.contains("seccomp"), "{r}");
        let r = explain_setup_error(&io::Error::from_raw_os_error(libc::ENOMEM), None);
        assert!(r.contains("RLIMIT_MEMLOCK"), "{r}");
        let r = explain_setup_error(&io::Error::from_raw_os_error(libc::ENOSYS), None);
        assert!(r.contains("5.1"), "{r}");
    }

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
