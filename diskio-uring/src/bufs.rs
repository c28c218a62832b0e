//! [`AlignedBuf`] as tokio-uring buffers.
//!
//! tokio-uring's operations take any buffer that implements its `IoBuf`/`IoBufMut` traits; those
//! traits are `unsafe` because the kernel uses the memory they describe while the operation is
//! in flight. [`Owned`] wraps an [`AlignedBuf`] for one operation and describes the first `len`
//! bytes of it.

use diskio::AlignedBuf;
use diskio::backend::RW_MAX;
use tokio_uring::buf::{IoBuf, IoBufMut};

/// An [`AlignedBuf`] lent to the kernel for one read or write of its first `len` bytes.
pub(crate) struct Owned {
    buf: AlignedBuf,
    len: usize,
}

impl Owned {
    /// Describes `buf[..buf.len()]`, capped at [`RW_MAX`] (tokio-uring passes lengths to the
    /// kernel as `u32`, so a larger request is made short here rather than wrapped there).
    pub(crate) fn new(buf: AlignedBuf) -> Self {
        let len = buf.len().min(RW_MAX);
        Self { buf, len }
    }

    pub(crate) fn into_inner(self) -> AlignedBuf {
        self.buf
    }
}

// SAFETY: the pointer is the start of the `AlignedBuf`'s heap allocation, which does not move
// when `Owned` moves and lives as long as `Owned` (tokio-uring keeps `Owned` until the kernel's
// completion). `len <= buf.len() <= capacity`, and all `len` bytes are initialised (an
// `AlignedBuf` is zeroed up to its length).
unsafe impl IoBuf for Owned {
    fn stable_ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }

    fn bytes_total(&self) -> usize {
        self.len
    }
}

// SAFETY: as for `IoBuf`; the kernel writes at most `bytes_total() = len` bytes from the start,
// all inside the buffer's length.
unsafe impl IoBufMut for Owned {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr()
    }

    unsafe fn set_init(&mut self, _pos: usize) {
        // Every byte up to `len` is initialised already; the read's length is applied by the
        // caller, which truncates the buffer to what was read.
    }
}
