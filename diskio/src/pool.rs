//! A bounded pool of same-sized aligned buffers.

use std::sync::{Arc, Mutex, PoisonError};

use crate::buf::{AlignedBuf, RawParts};
use crate::error::Result;

/// A pool that recycles [`AlignedBuf`]s of one size class.
///
/// - [`get`](Self::get) hands out an idle buffer if there is one and **allocates a new one when
///   the pool is empty: it never waits**. Backpressure belongs to the I/O queues, not here.
/// - A buffer from the pool goes back to it automatically when dropped (wherever that happens:
///   in the caller, or in a backend after a cancelled operation completes).
/// - At most `idle_max` buffers are kept; a buffer dropped when the pool is full is freed. So the
///   memory a pool holds is bounded by `idle_max * buf_bytes`, whatever the load.
///
/// Buffers handed out have length 0; their memory may hold bytes from an earlier use (never
/// visible through `Deref`, since `resize` zeroes what it adds).
///
/// A **pinned** pool ([`BufPool::pinned`]) is a fixed set of buffers allocated up front, whose
/// memory is never freed while the pool or any of its buffers lives. That is what a backend
/// needs to register the memory with the kernel once (io_uring fixed buffers): it asks
/// [`pinned_regions`](Self::pinned_regions) for the addresses and
/// [`pinned_index`](Self::pinned_index) for a buffer's place among them.
///
/// ```
/// use diskio::BufPool;
///
/// let pool = BufPool::new(4096, 4096, 8)?;
/// let mut buf = pool.get()?;
/// buf.extend_from_slice(b"record")?;
/// drop(buf); // back in the pool
/// assert_eq!(pool.idle(), 1);
/// let again = pool.get()?;
/// assert!(again.is_empty());
/// # Ok::<(), diskio::Error>(())
/// ```
#[derive(Clone)]
pub struct BufPool {
    shared: Arc<PoolShared>,
}

pub(crate) struct PoolShared {
    buf_bytes: usize,
    alignment: usize,
    idle_max: usize,
    idle: Mutex<Vec<RawParts>>,
    /// For a pinned pool, `(address, capacity)` of every buffer of the set, by index.
    pinned: Option<Box<[(usize, usize)]>>,
}

impl BufPool {
    /// A pool of buffers of capacity `buf_bytes` (rounded up to `alignment`), keeping at most
    /// `idle_max` idle buffers.
    ///
    /// # Errors
    ///
    /// [`Error::Alloc`](crate::Error::Alloc) if `buf_bytes`/`alignment` could never be allocated
    /// (checked once here, so `get` fails only when memory runs out).
    pub fn new(buf_bytes: usize, alignment: usize, idle_max: usize) -> Result<Self> {
        let rounded = crate::buf::layout_for(buf_bytes, alignment)?.size();
        Ok(Self {
            shared: Arc::new(PoolShared {
                buf_bytes: rounded,
                alignment,
                idle_max,
                idle: Mutex::new(Vec::with_capacity(idle_max.min(1024))),
                pinned: None,
            }),
        })
    }

    /// A pinned pool: `count` buffers of capacity `buf_bytes` (rounded up to `alignment`),
    /// allocated and zeroed now. Their memory stays allocated, at the same addresses, for as
    /// long as the pool or any buffer from it lives: dropped buffers always come back, and
    /// nothing is freed until the last of them and of the pool's handles is gone.
    ///
    /// [`get`](Self::get) on an exhausted pinned pool allocates an ordinary buffer outside the
    /// set (`is_pooled() == false`, [`pinned_index`](Self::pinned_index) `None`): it never waits.
    ///
    /// # Errors
    ///
    /// [`Error::Alloc`](crate::Error::Alloc) if the size class is impossible or memory runs
    /// out, [`Error::InvalidInput`](crate::Error::InvalidInput) if `count` does not fit in a
    /// `u32`.
    pub fn pinned(buf_bytes: usize, alignment: usize, count: usize) -> Result<Self> {
        let count_u32 = u32::try_from(count)
            .ok()
            .filter(|&c| c != crate::buf::NOT_PINNED)
            .ok_or_else(|| crate::Error::InvalidInput {
                ctx: crate::Context::new(crate::Op::Buffer),
                reason: format!("a pinned pool holds fewer than 2^32 - 1 buffers, not {count}"),
            })?;
        let rounded = crate::buf::layout_for(buf_bytes, alignment)?.size();
        let mut idle = Vec::with_capacity(count);
        let mut regions = Vec::with_capacity(count);
        for index in 0..count_u32 {
            let parts = AlignedBuf::with_capacity(rounded, alignment)?.into_pinned_parts(index);
            regions.push((parts.ptr.as_ptr() as usize, parts.capacity));
            idle.push(parts);
        }
        // Hand out low indexes first.
        idle.reverse();
        Ok(Self {
            shared: Arc::new(PoolShared {
                buf_bytes: rounded,
                alignment,
                idle_max: count,
                idle: Mutex::new(idle),
                pinned: Some(regions.into_boxed_slice()),
            }),
        })
    }

    /// `true` for a pool made by [`pinned`](Self::pinned).
    pub fn is_pinned(&self) -> bool {
        self.shared.pinned.is_some()
    }

    /// The `(address, capacity)` of every buffer of a pinned pool, in index order (empty for an
    /// ordinary pool). The memory stays valid for as long as this pool handle (or a clone)
    /// lives.
    pub fn pinned_regions(&self) -> Vec<(*mut u8, usize)> {
        self.shared
            .pinned
            .iter()
            .flat_map(|r| r.iter())
            .map(|&(addr, cap)| (addr as *mut u8, cap))
            .collect()
    }

    /// The index of `buf` in this pool's pinned set, or `None` if it is not one of its buffers.
    pub fn pinned_index(&self, buf: &AlignedBuf) -> Option<u32> {
        let ours = buf.pool().is_some_and(|p| Arc::ptr_eq(p, &self.shared));
        if ours { buf.pinned_index() } else { None }
    }

    /// An empty buffer of this pool's size class: an idle one, or a newly allocated one.
    ///
    /// # Errors
    ///
    /// [`Error::Alloc`](crate::Error::Alloc) if a new buffer is needed and memory has run out.
    pub fn get(&self) -> Result<AlignedBuf> {
        if let Some(parts) = self.shared.take_idle() {
            return Ok(AlignedBuf::from_pool_parts(parts, Arc::clone(&self.shared)));
        }
        let fresh = AlignedBuf::with_capacity(self.shared.buf_bytes, self.shared.alignment)?;
        if self.is_pinned() {
            // The set is fixed: this buffer stays outside it.
            return Ok(fresh);
        }
        Ok(fresh.into_pool(Arc::clone(&self.shared)))
    }

    /// Like [`get`](Self::get), with the length set to `len` zero bytes.
    ///
    /// # Errors
    ///
    /// As `get`, and [`Error::InvalidInput`](crate::Error::InvalidInput) if `len` exceeds the
    /// size class.
    pub fn get_zeroed(&self, len: usize) -> Result<AlignedBuf> {
        let mut buf = self.get()?;
        buf.resize(len)?;
        Ok(buf)
    }

    /// Allocates idle buffers until `count` are idle (at most `idle_max`), so that the first uses
    /// do not pay for allocation and first-touch page faults.
    ///
    /// # Errors
    ///
    /// [`Error::Alloc`](crate::Error::Alloc) if memory runs out; what was allocated is kept.
    pub fn prewarm(&self, count: usize) -> Result<()> {
        let target = count.min(self.shared.idle_max);
        let mut fresh = Vec::new();
        while self.idle() + fresh.len() < target {
            fresh.push(self.get()?);
        }
        drop(fresh);
        Ok(())
    }

    /// Capacity of the buffers of this pool.
    pub fn buf_bytes(&self) -> usize {
        self.shared.buf_bytes
    }

    /// Alignment of the buffers of this pool.
    pub fn alignment(&self) -> usize {
        self.shared.alignment
    }

    /// How many idle buffers the pool keeps at most.
    pub fn idle_max(&self) -> usize {
        self.shared.idle_max
    }

    /// How many buffers are idle now.
    pub fn idle(&self) -> usize {
        self.shared.lock().len()
    }
}

impl std::fmt::Debug for BufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufPool")
            .field("buf_bytes", &self.shared.buf_bytes)
            .field("alignment", &self.shared.alignment)
            .field("idle_max", &self.shared.idle_max)
            .field("idle", &self.idle())
            .finish()
    }
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RawParts>> {
        // The vector stays consistent even if a holder panicked: push/pop are not interrupted.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_idle(&self) -> Option<RawParts> {
        self.lock().pop()
    }

    /// Takes back a dropped buffer's memory, or frees it when the pool is full.
    pub(crate) fn recycle(&self, parts: RawParts) {
        let mut idle = self.lock();
        if idle.len() < self.idle_max {
            idle.push(parts);
        } else {
            drop(idle);
            parts.free();
        }
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        for parts in idle {
            parts.free();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_up_to_idle_max_then_frees() {
        let pool = BufPool::new(1000, 512, 2).unwrap();
        assert_eq!(pool.buf_bytes(), 1024);
        let bufs: Vec<_> = (0..5).map(|_| pool.get().unwrap()).collect();
        assert!(bufs.iter().all(|b| b.is_pooled() && b.capacity() == 1024));
        drop(bufs);
        assert_eq!(pool.idle(), 2);
    }

    #[test]
    fn recycled_buffers_come_back_empty_and_zero_on_growth() {
        let pool = BufPool::new(4096, 4096, 4).unwrap();
        let mut buf = pool.get().unwrap();
        buf.extend_from_slice(&[0xAB; 100]).unwrap();
        let ptr = buf.as_ptr();
        drop(buf);
        let mut again = pool.get_zeroed(100).unwrap();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.iter().all(|&b| b == 0));
        assert!(again.resize(4097).is_err());
    }

    #[test]
    fn buffers_outlive_the_pool_handle() {
        let pool = BufPool::new(4096, 4096, 4).unwrap();
        let buf = pool.get().unwrap();
        drop(pool);
        assert_eq!(buf.capacity(), 4096);
        drop(buf);
    }

    #[test]
    fn prewarm_fills_to_the_limit() {
        let pool = BufPool::new(4096, 4096, 3).unwrap();
        pool.prewarm(10).unwrap();
        assert_eq!(pool.idle(), 3);
    }

    #[test]
    fn pinned_pool_keeps_its_set_and_indexes_it() {
        let pool = BufPool::pinned(4096, 4096, 2).unwrap();
        let regions = pool.pinned_regions();
        assert_eq!(regions.len(), 2);
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        let extra = pool.get().unwrap();
        assert_eq!(pool.pinned_index(&a), Some(0));
        assert_eq!(pool.pinned_index(&b), Some(1));
        assert_eq!(a.as_ptr() as usize, regions[0].0 as usize);
        assert_eq!(pool.pinned_index(&extra), None);
        assert!(!extra.is_pooled());
        let other = BufPool::pinned(4096, 4096, 1).unwrap();
        assert_eq!(other.pinned_index(&a), None);
        drop((a, b, extra));
        assert_eq!(pool.idle(), 2);
        let again = pool.get().unwrap();
        let index = pool.pinned_index(&again).unwrap() as usize;
        assert_eq!(again.as_ptr() as usize, regions[index].0 as usize);
    }

    #[test]
    fn pinned_memory_outlives_the_pool_handle() {
        let pool = BufPool::pinned(4096, 4096, 1).unwrap();
        let mut buf = pool.get_zeroed(10).unwrap();
        drop(pool);
        buf.copy_from_slice(b"0123456789");
        assert_eq!(&buf[..], b"0123456789");
    }

    #[test]
    fn bad_size_classes_are_refused() {
        assert!(BufPool::new(4096, 3, 1).is_err());
        assert!(BufPool::new(usize::MAX, 4096, 1).is_err());
    }
}
