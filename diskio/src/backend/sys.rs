//! What every backend asks of the system the same way: the `O_DIRECT` alignment of a file, and
//! the kernel's limits on one transfer.

use std::fs::File;

use crate::file::DirectAlignment;

/// Most buffers one vectored system call or `WRITEV` takes on Linux (`UIO_MAXIOV`); a backend
/// splits longer lists, or makes the write short.
pub const IOV_MAX: usize = 1024;

/// Most bytes one read or write moves on Linux (`MAX_RW_COUNT`); a backend makes a larger
/// request short.
pub const RW_MAX: usize = 0x7fff_f000;

/// The `O_DIRECT` alignment of an open file: `statx(STATX_DIOALIGN)` where the kernel reports it
/// (Linux 6.1+ on ext4, xfs, btrfs, ...), else 4096 for both, which every device accepts.
pub fn direct_alignment(file: &File) -> DirectAlignment {
    const FALLBACK: DirectAlignment = DirectAlignment {
        memory: 4096,
        offset: 4096,
    };
    dio_align_from_statx(file).unwrap_or(FALLBACK)
}

#[cfg(target_os = "linux")]
fn dio_align_from_statx(file: &File) -> Option<DirectAlignment> {
    use std::os::fd::AsRawFd;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the descriptor is open for the duration of the call, the path is a valid empty C
    // string (AT_EMPTY_PATH: the descriptor itself is examined) and `stx` points to writable
    // memory of the size the kernel expects.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: `statx` succeeded and filled the struct; it was zero-initialised before, and all
    // of its fields are plain integers for which every bit pattern (zero included) is valid.
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    Some(DirectAlignment {
        memory: stx.stx_dio_mem_align.max(1),
        offset: stx.stx_dio_offset_align,
    })
}

#[cfg(not(target_os = "linux"))]
fn dio_align_from_statx(_file: &File) -> Option<DirectAlignment> {
    None
}

/// `RLIMIT_MEMLOCK` as a person reads it (`"8192 KiB"`, `"unlimited"`, `"unknown"`).
pub fn memlock_limit() -> String {
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
