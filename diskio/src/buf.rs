//! Owned, aligned, zero-initialised buffers.
//!
//! `AlignedBuf` is the only buffer type the [`DiskIo`](crate::DiskIo) operations take and
//! return. It owns its memory (so it can be handed to the kernel for the whole life of an
//! operation), the memory is aligned to at least the requested alignment (so it can be used with
//! `O_DIRECT`), and every byte up to the capacity is initialised (zeroed at allocation), so a
//! backend may let the kernel write anywhere in `[0, capacity)`.
//!
//! A buffer may belong to a [`BufPool`](crate::BufPool); it then goes back to the pool when it is
//! dropped instead of being freed.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pool::PoolShared;

/// The largest capacity an [`AlignedBuf`] may have: 1 TiB. Anything larger is refused with
/// [`Error::Alloc`] before the allocator is asked.
pub const BUF_BYTES_MAX: usize = 1 << 40;

/// The largest alignment an [`AlignedBuf`] may ask for: 1 MiB.
pub const BUF_ALIGN_MAX: usize = 1 << 20;

/// An owned, aligned, zero-initialised byte buffer.
///
/// - `len() <= capacity()`; the capacity is a multiple of `alignment()` and fixed for the life
///   of the buffer: growth happens within it ([`resize`](Self::resize),
///   [`extend_from_slice`](Self::extend_from_slice)) and never reallocates.
/// - `Deref<Target = [u8]>` covers the first `len()` bytes.
/// - Every byte of the capacity is initialised memory: newly allocated buffers are zeroed, and
///   [`resize`](Self::resize) zeroes the bytes it adds.
/// - The buffer is `Send + Sync` and its memory never moves while it lives, so a pointer to it
///   stays valid when the buffer itself is moved (into a future, a thread or the kernel's hands).
///
/// # Example
///
/// ```
/// use diskio::AlignedBuf;
///
/// let mut buf = AlignedBuf::with_capacity(100, 4096)?;
/// assert_eq!(buf.capacity(), 4096); // rounded up to the alignment
/// assert_eq!(buf.len(), 0);
/// buf.extend_from_slice(b"hello")?;
/// assert_eq!(&buf[..], b"hello");
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// # Ok::<(), diskio::Error>(())
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    alignment: usize,
    /// Where the memory goes back to when the buffer is dropped; `None` frees it.
    pool: Option<Arc<PoolShared>>,
    /// Index of the buffer in its pool's pinned set, or [`NOT_PINNED`].
    pinned: u32,
}

/// The `pinned` value of a buffer outside any pinned set.
pub(crate) const NOT_PINNED: u32 = u32::MAX;

// SAFETY: `AlignedBuf` uniquely owns its allocation (like `Vec<u8>`); nothing else aliases it,
// so moving it to another thread or sharing `&AlignedBuf` across threads is sound.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads of initialised bytes, as for `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer that owns no memory (capacity 0). Never fails, never allocates.
    pub fn empty() -> Self {
        Self {
            ptr: NonNull::<u8>::dangling(),
            len: 0,
            capacity: 0,
            alignment: 1,
            pool: None,
            pinned: NOT_PINNED,
        }
    }

    /// Allocates a zeroed buffer of length 0 whose capacity is `capacity` rounded up to a
    /// multiple of `alignment`.
    ///
    /// # Errors
    ///
    /// [`Error::Alloc`] if `alignment` is not a power of two or exceeds [`BUF_ALIGN_MAX`], if the
    /// rounded capacity exceeds [`BUF_BYTES_MAX`], or if the allocator has no memory.
    pub fn with_capacity(capacity: usize, alignment: usize) -> Result<Self> {
        let layout = layout_for(capacity, alignment)?;
        if layout.size() == 0 {
            let mut empty = Self::empty();
            empty.alignment = alignment;
            return Ok(empty);
        }
        // SAFETY: `layout` has a non-zero size (checked just above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or(Error::Alloc {
            bytes: layout.size(),
            align: alignment,
            reason: "the allocator has no memory for it",
        })?;
        Ok(Self {
            ptr,
            len: 0,
            capacity: layout.size(),
            alignment,
            pool: None,
            pinned: NOT_PINNED,
        })
    }

    /// Allocates a buffer of `len` zero bytes (capacity rounded up to `alignment`).
    ///
    /// # Errors
    ///
    /// As [`with_capacity`](Self::with_capacity).
    pub fn zeroed(len: usize, alignment: usize) -> Result<Self> {
        let mut buf = Self::with_capacity(len, alignment)?;
        buf.len = len;
        Ok(buf)
    }

    /// Allocates a buffer holding a copy of `data`.
    ///
    /// # Errors
    ///
    /// As [`with_capacity`](Self::with_capacity).
    pub fn from_slice(data: &[u8], alignment: usize) -> Result<Self> {
        let mut buf = Self::with_capacity(data.len(), alignment)?;
        buf.extend_from_slice(data)?;
        Ok(buf)
    }

    /// Number of initialised bytes the buffer holds (what `Deref` shows and writes send).
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when `len() == 0`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory owned; a multiple of [`alignment`](Self::alignment).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The alignment the memory was allocated with (a power of two).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// `true` when the buffer came from a [`BufPool`](crate::BufPool) and returns to it on drop.
    pub fn is_pooled(&self) -> bool {
        self.pool.is_some()
    }

    /// Pointer to the first byte. Stable for the buffer's life, even when the buffer moves.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Mutable pointer to the first byte; the `capacity()` bytes behind it are initialised.
    /// Stable for the buffer's life, even when the buffer moves.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Sets the length to `new_len`, zeroing any bytes added.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if `new_len > capacity()`; the buffer is unchanged.
    pub fn resize(&mut self, new_len: usize) -> Result<()> {
        if new_len > self.capacity {
            return Err(Error::capacity(new_len, self.capacity));
        }
        if new_len > self.len {
            let added = new_len - self.len;
            // SAFETY: `len..new_len` lies within the allocation (`new_len <= capacity`).
            unsafe { self.ptr.as_ptr().add(self.len).write_bytes(0, added) };
        }
        self.len = new_len;
        Ok(())
    }

    /// Shortens the buffer to `len` bytes; does nothing if it is already shorter.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Sets the length to 0; the capacity is kept.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `data`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the result would not fit in the capacity; nothing is appended.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> Result<()> {
        let new_len = self
            .len
            .checked_add(data.len())
            .filter(|&n| n <= self.capacity)
            .ok_or_else(|| Error::capacity(self.len.saturating_add(data.len()), self.capacity))?;
        self.spare_mut()[..data.len()].copy_from_slice(data);
        self.len = new_len;
        Ok(())
    }

    /// The bytes between `len()` and `capacity()` (initialised, possibly stale from earlier use).
    fn spare_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.capacity_mut()[len..]
    }

    fn capacity_mut(&mut self) -> &mut [u8] {
        // SAFETY: the allocation holds `capacity` initialised bytes (zeroed at allocation and
        // only ever written with bytes since) and `&mut self` guarantees exclusive access. For
        // capacity 0 the pointer is dangling but non-null and aligned, which a 0-length slice
        // allows.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// Allocates a new buffer with the same alignment and a copy of the initialised bytes.
    ///
    /// # Errors
    ///
    /// As [`with_capacity`](Self::with_capacity).
    pub fn try_clone(&self) -> Result<Self> {
        Self::from_slice(self, self.alignment)
    }

    /// Builds a buffer from parts that a [`BufPool`](crate::BufPool) kept.
    pub(crate) fn from_pool_parts(parts: RawParts, pool: Arc<PoolShared>) -> Self {
        Self {
            ptr: parts.ptr,
            len: 0,
            capacity: parts.capacity,
            alignment: parts.alignment,
            pool: Some(pool),
            pinned: parts.pinned,
        }
    }

    /// The buffer's index in its pool's pinned set, if it belongs to one.
    pub(crate) fn pinned_index(&self) -> Option<u32> {
        (self.pinned != NOT_PINNED).then_some(self.pinned)
    }

    /// The pool the buffer goes back to, if any.
    pub(crate) fn pool(&self) -> Option<&Arc<PoolShared>> {
        self.pool.as_ref()
    }

    /// Marks the buffer as belonging to `pool`, so that dropping it recycles its memory.
    pub(crate) fn into_pool(mut self, pool: Arc<PoolShared>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Takes the memory out of a buffer that belongs to no pool, marking it as entry `index` of
    /// a pinned set; the caller becomes responsible for freeing it.
    pub(crate) fn into_pinned_parts(self, index: u32) -> RawParts {
        let this = std::mem::ManuallyDrop::new(self);
        RawParts {
            ptr: this.ptr,
            capacity: this.capacity,
            alignment: this.alignment,
            pinned: index,
        }
    }

    /// Releases the memory to the global allocator.
    fn free(parts: RawParts) {
        if parts.capacity == 0 {
            return;
        }
        // The layout was valid when the memory was allocated with it.
        if let Ok(layout) = Layout::from_size_align(parts.capacity, parts.alignment) {
            // SAFETY: `parts.ptr` was returned by `alloc_zeroed` with exactly this layout and is
            // released exactly once (its owner is being dropped).
            unsafe { alloc::dealloc(parts.ptr.as_ptr(), layout) };
        }
    }
}

/// The memory of a buffer, without its length: what a pool keeps between uses.
pub(crate) struct RawParts {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) capacity: usize,
    pub(crate) alignment: usize,
    /// Index in a pinned set, or [`NOT_PINNED`].
    pub(crate) pinned: u32,
}

// SAFETY: `RawParts` is the sole owner of the allocation it describes (taken out of a dropped
// `AlignedBuf`), so moving it between threads is sound, as for the buffer itself.
unsafe impl Send for RawParts {}

impl RawParts {
    pub(crate) fn free(self) {
        AlignedBuf::free(self);
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let parts = RawParts {
            ptr: self.ptr,
            capacity: self.capacity,
            alignment: self.alignment,
            pinned: self.pinned,
        };
        match self.pool.take() {
            Some(pool) => pool.recycle(parts),
            None => Self::free(parts),
        }
    }
}

pub(crate) fn layout_for(capacity: usize, alignment: usize) -> Result<Layout> {
    let refuse = |reason| Error::Alloc {
        bytes: capacity,
        align: alignment,
        reason,
    };
    if !alignment.is_power_of_two() {
        return Err(refuse("the alignment is not a power of two"));
    }
    if alignment > BUF_ALIGN_MAX {
        return Err(refuse("the alignment is larger than BUF_ALIGN_MAX (1 MiB)"));
    }
    if capacity > BUF_BYTES_MAX {
        return Err(refuse("the size is larger than BUF_BYTES_MAX (1 TiB)"));
    }
    // Cannot overflow: capacity <= 2^40 and alignment <= 2^20.
    let rounded = capacity.div_ceil(alignment) * alignment;
    Layout::from_size_align(rounded, alignment).map_err(|_| refuse("the layout is invalid"))
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= capacity` bytes are initialised and owned by `self`; the shared borrow
        // of `self` prevents mutation for the slice's life.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.capacity_mut()[..len]
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        Self::empty()
    }
}

impl PartialEq<[u8]> for AlignedBuf {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for AlignedBuf {}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("alignment", &self.alignment)
            .field("pooled", &self.pool.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_rounds_up_and_memory_is_aligned_and_zeroed() {
        for align in [1, 8, 512, 4096, 65536] {
            let buf = AlignedBuf::zeroed(1000, align).unwrap();
            assert_eq!(buf.len(), 1000);
            assert_eq!(buf.capacity() % align, 0);
            assert!(buf.capacity() >= 1000);
            assert_eq!(buf.as_ptr() as usize % align, 0);
            assert!(buf.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn growth_stays_within_capacity_and_zeroes() {
        let mut buf = AlignedBuf::from_slice(&[7; 10], 512).unwrap();
        buf.truncate(4);
        buf.resize(8).unwrap();
        assert_eq!(&buf[..], &[7, 7, 7, 7, 0, 0, 0, 0]);
        assert!(buf.resize(513).is_err());
        assert_eq!(buf.len(), 8);
        buf.resize(512).unwrap();
        let err = buf.extend_from_slice(&[1]).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert_eq!(buf.len(), 512);
    }

    #[test]
    fn absurd_requests_are_errors_not_panics() {
        for (cap, align) in [
            (usize::MAX, 4096),
            (BUF_BYTES_MAX + 1, 4096),
            (10, 3),
            (10, 0),
            (10, 1 << 30),
        ] {
            let err = AlignedBuf::with_capacity(cap, align).unwrap_err();
            assert!(matches!(err, Error::Alloc { .. }), "{err}");
        }
    }

    #[test]
    fn empty_and_zero_capacity_buffers_work() {
        let mut buf = AlignedBuf::with_capacity(0, 4096).unwrap();
        assert_eq!(buf.capacity(), 0);
        assert_eq!(&buf[..], b"");
        buf.extend_from_slice(b"").unwrap();
        assert!(buf.extend_from_slice(b"x").is_err());
        let clone = AlignedBuf::empty().try_clone().unwrap();
        assert!(clone.is_empty());
    }

    #[test]
    fn try_clone_copies_contents() {
        let buf = AlignedBuf::from_slice(b"abc", 4096).unwrap();
        let copy = buf.try_clone().unwrap();
        assert_eq!(copy, buf);
        assert_ne!(copy.as_ptr(), buf.as_ptr());
    }

    #[test]
    fn pointer_is_stable_across_moves() {
        let buf = AlignedBuf::zeroed(64, 64).unwrap();
        let before = buf.as_ptr();
        let moved = std::thread::spawn(move || buf).join().unwrap();
        assert_eq!(moved.as_ptr(), before);
    }
}
