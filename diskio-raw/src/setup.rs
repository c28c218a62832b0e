//! Ring creation, probing and registration.

use diskio::backend::{
    check_disable_env, check_opcodes, memlock_limit, probe_refused, setup_refused,
};
use diskio::{BufPool, Result};
use io_uring::{IoUring, opcode};

use crate::options::RawOptions;
use crate::ring::Ring;

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
    check_disable_env(DISABLE_ENV, "diskio-raw")?;
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
            builder.build(entries).map_err(|e| setup_refused(&e))?
        }
        Err(e) => return Err(setup_refused(&e)),
    };
    let mut probe = io_uring::Probe::new();
    uring
        .submitter()
        .register_probe(&mut probe)
        .map_err(|e| probe_refused(&e))?;
    check_opcodes(&NEEDED, |code| probe.is_supported(code))?;
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
