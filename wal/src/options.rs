//! Options of a [`Wal`](crate::Wal).

use crate::error::{Result, WalError};
use crate::format::{HEADER_LEN, frame_len};

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns once the record is on stable storage (its group was written and
    /// `fdatasync`ed). The default.
    Sync,
    /// `append` returns once the record is queued; groups are written in the background and
    /// synced only by [`Wal::sync`](crate::Wal::sync), at rotation and at close. A power loss
    /// loses what the OS had not written back. Open such a log with
    /// [`RecoveryMode::StopAtDamage`] after a crash: unsynced pages can reach the disk in any
    /// order.
    None,
    /// `append` returns once the record is queued, as with `None`; the log is synced at least
    /// this often while records are waiting, so a power loss loses at most about one interval.
    /// The timer is a thread of the log's own. Recover such a log with
    /// [`RecoveryMode::StopAtDamage`] too.
    Periodic(std::time::Duration),
}

/// What recovery does with damage that has valid records after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open ([`WalError::Corrupt`]): acknowledged data may be lost, a person should
    /// look. A torn tail (damage with nothing valid after it) is always cut. The default.
    #[default]
    Strict,
    /// Keep the records before the first damage, cut everything after it (later segments
    /// included), and report what was cut.
    StopAtDamage,
}

/// Options of a [`Wal`](crate::Wal).
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub(crate) durability: Durability,
    pub(crate) recovery: RecoveryMode,
    pub(crate) segment_bytes: u64,
    pub(crate) record_max: usize,
    pub(crate) queued_bytes_max: usize,
    pub(crate) group_bytes_max: usize,
    pub(crate) zero_fill: bool,
    pub(crate) direct_io: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl WalOptions {
    /// `Sync` durability, `Strict` recovery, 64 MiB segments, records up to 1 MiB, 64 MiB of
    /// queued bytes, groups up to 4 MiB, segments zero-filled when created, `O_DIRECT` where
    /// the filesystem allows it.
    pub fn new() -> Self {
        Self {
            durability: Durability::Sync,
            recovery: RecoveryMode::Strict,
            segment_bytes: 64 << 20,
            record_max: 1 << 20,
            queued_bytes_max: 64 << 20,
            group_bytes_max: 4 << 20,
            zero_fill: true,
            direct_io: true,
        }
    }

    /// When an append counts as done.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// What recovery does with damage before the tail.
    pub fn recovery(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        self
    }

    /// Size of a segment file, header included (at least 64 KiB and room for one largest
    /// record).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Largest record payload accepted (at most 256 MiB).
    pub fn record_max(mut self, bytes: usize) -> Self {
        self.record_max = bytes;
        self
    }

    /// Bytes of records queued and not yet written; `append` waits while the queue is full.
    /// At least one largest frame.
    pub fn queued_bytes_max(mut self, bytes: usize) -> Self {
        self.queued_bytes_max = bytes;
        self
    }

    /// Most bytes one group commit writes (a larger queue goes down in several groups).
    pub fn group_bytes_max(mut self, bytes: usize) -> Self {
        self.group_bytes_max = bytes;
        self
    }

    /// Write zeros over a new segment before use (default on; `Sync` durability only, the others
    /// preallocate). Group commits over blocks that were written before are cheaper to sync than
    /// ones that grow the file or fill preallocated extents, because the sync then has no
    /// metadata to journal. Segments are prepared in the background either way. Where the
    /// filesystem cannot preallocate (`fallocate` answers `EOPNOTSUPP`), a segment that would be
    /// preallocated is grown to its size instead, its blocks allocated as the log fills it.
    pub fn zero_fill(mut self, on: bool) -> Self {
        self.zero_fill = on;
        self
    }

    /// Write segments with `O_DIRECT` (default on: measured 1.4–1.7× buffered writes at 1,024
    /// durable writers and 1.6–3.6× unsynced, level at one writer, 0.85–0.94× at 64 writers on
    /// the raw backend; see the README). Each group goes down as whole 4 KiB blocks from the committer's aligned
    /// buffer, straight to the device: the partly filled last block of a group is kept in
    /// memory and written again, completed, by the next group (its earlier bytes unchanged, so
    /// a torn rewrite keeps them, sector writes being atomic). The page cache holds no copy of
    /// the log. `segment_bytes` must then be a multiple of 4 KiB. Where the filesystem refuses
    /// `O_DIRECT` (tmpfs before Linux 6.6, some FUSE and network filesystems), [`Wal::open`](crate::Wal::open) writes through the page cache
    /// instead, logs why (`tracing` warning), and [`Wal::is_direct_io`](crate::Wal::is_direct_io)
    /// says so.
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// Largest frame, header and padding included.
    pub(crate) fn frame_max(&self) -> usize {
        frame_len(self.record_max)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(WalError::InvalidOptions(s));
        if self.record_max > 256 << 20 {
            return bad(format!(
                "record_max must be at most 256 MiB, not {}",
                self.record_max
            ));
        }
        let need = (HEADER_LEN + self.frame_max()) as u64;
        if self.segment_bytes < need.max(64 << 10) {
            return bad(format!(
                "segment_bytes must be at least 64 KiB and hold one largest record ({need} bytes), not {}",
                self.segment_bytes
            ));
        }
        if self.queued_bytes_max < self.frame_max() {
            return bad(format!(
                "queued_bytes_max must hold one largest frame ({} bytes), not {}",
                self.frame_max(),
                self.queued_bytes_max
            ));
        }
        if let Durability::Periodic(d) = self.durability {
            if d.is_zero() || d > std::time::Duration::from_secs(3600) {
                return bad(format!(
                    "a Periodic interval must be between 1 ns and an hour, not {d:?}"
                ));
            }
        }
        if self.direct_io && self.segment_bytes % crate::format::DIRECT_BLOCK != 0 {
            return bad(format!(
                "with direct_io, segment_bytes must be a multiple of {} bytes, not {}",
                crate::format::DIRECT_BLOCK,
                self.segment_bytes
            ));
        }
        if self.group_bytes_max == 0 {
            return bad("group_bytes_max must be at least 1".to_owned());
        }
        Ok(())
    }
}
