//! Open files: the descriptor and what the core's checks need.

use std::fs::File;

use diskio::{DirectAlignment, FileAccess};

/// An open file. Operations hold an `Arc` to it, so closing the file while operations are in
/// flight keeps the descriptor open until the last of them finishes.
pub(crate) struct OpenFile {
    pub(crate) file: File,
    pub(crate) access: FileAccess,
}

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
#[allow(unsafe_code)] // statx: the kernel fills a struct we own
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
