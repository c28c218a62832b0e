//! The queue of encoded frames waiting for the committer: chunks of whole frames, so taking a
//! group never copies what stays queued, and chunk memory is reused rather than faulted in anew.

use std::collections::VecDeque;

use crate::Lsn;
use crate::format::{encode_frame, frame_len, whole_frames};

/// Bytes of a chunk (a frame larger than this gets a chunk of its own).
const CHUNK: usize = 1 << 20;

/// Emptied chunks kept for reuse.
const FREE_MAX: usize = 4;

/// Whole frames, back to back, and how many.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub(crate) bytes: Vec<u8>,
    pub(crate) records: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    chunks: VecDeque<Chunk>,
    free: Vec<Vec<u8>>,
    /// The list of a group's chunks, emptied and kept for the next group.
    spare: Vec<Chunk>,
}

impl Queue {
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Records queued.
    pub(crate) fn records(&self) -> u64 {
        self.chunks.iter().map(|c| c.records).sum()
    }

    /// Encodes the frame of `payload` with `lsn` at the end of the queue.
    pub(crate) fn push(&mut self, lsn: Lsn, payload: &[u8]) {
        let need = frame_len(payload.len());
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.bytes.len() + need <= CHUNK);
        if !fits {
            let bytes = match self.free.pop() {
                Some(b) if need <= CHUNK => b,
                _ => Vec::with_capacity(CHUNK.max(need)),
            };
            self.chunks.push_back(Chunk { bytes, records: 0 });
        }
        if let Some(c) = self.chunks.back_mut() {
            encode_frame(&mut c.bytes, lsn, payload);
            c.records += 1;
        }
    }

    /// Takes whole frames from the front, at most `limit` bytes of them; returns the chunks taken
    /// (none if the first frame alone is larger than `limit`).
    pub(crate) fn take(&mut self, limit: usize) -> Vec<Chunk> {
        let mut taken = std::mem::take(&mut self.spare);
        let mut bytes = 0;
        while let Some(front) = self.chunks.front_mut() {
            if bytes + front.bytes.len() <= limit {
                bytes += front.bytes.len();
                if let Some(c) = self.chunks.pop_front() {
                    taken.push(c);
                }
                continue;
            }
            let (cut, records) = whole_frames(&front.bytes, limit - bytes);
            if records > 0 {
                let rest = front.bytes.split_off(cut);
                let head = std::mem::replace(&mut front.bytes, rest);
                front.records -= records;
                taken.push(Chunk {
                    bytes: head,
                    records,
                });
            }
            break;
        }
        taken
    }

    /// Gives the memory of chunks taken (and written) back for reuse, the list's too.
    pub(crate) fn recycle_all(&mut self, mut chunks: Vec<Chunk>) {
        for c in chunks.drain(..) {
            self.recycle(c.bytes);
        }
        if self.spare.capacity() < chunks.capacity() {
            self.spare = chunks;
        }
    }

    /// Gives an emptied chunk's memory back for reuse.
    pub(crate) fn recycle(&mut self, mut bytes: Vec<u8>) {
        if self.free.len() < FREE_MAX && (CHUNK..2 * CHUNK).contains(&bytes.capacity()) {
            bytes.clear();
            self.free.push(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_whole_frames_in_order_within_the_limit() {
        let mut q = Queue::default();
        for lsn in 1..=10u64 {
            q.push(lsn, &[lsn as u8; 100]); // frames of 128 bytes
        }
        let a = q.take(300);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].records, a[0].bytes.len()), (2, 256));
        assert!(
            q.take(100).is_empty(),
            "a frame larger than the limit is not split"
        );
        let b = q.take(usize::MAX);
        assert_eq!(b.iter().map(|c| c.records).sum::<u64>(), 8);
        assert_eq!(b[0].bytes[8], 3, "LSN 3 comes next");
        assert!(q.is_empty());
    }

    #[test]
    fn large_frames_get_their_own_chunk_and_memory_is_reused() {
        let mut q = Queue::default();
        q.push(1, &vec![1; 2 * CHUNK]);
        q.push(2, b"small");
        let taken = q.take(usize::MAX);
        assert_eq!(taken.len(), 2);
        q.recycle_all(taken);
        assert_eq!(q.free.len(), 1, "only chunk-sized memory is kept");
        assert!(
            q.spare.is_empty() && q.spare.capacity() >= 2,
            "the list is kept, emptied"
        );
        q.push(3, b"again");
        let again = q.take(usize::MAX);
        assert_eq!(
            (again.len(), again[0].records),
            (1, 1),
            "a kept list starts empty"
        );
    }
}
