//! # wal
//!
//! A segmented, CRC32C-checksummed, group-commit write-ahead log, generic over any
//! [`DiskIo`](diskio::DiskIo) backend, for services on Tokio that need ordered, durable,
//! replayable records.
//!
//! ```
//! use wal::{Wal, WalOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! # rt.block_on(async {
//! # let dir = std::env::temp_dir().join(format!("wal-doc-{}", std::process::id()));
//! let disk = wal::DefaultDisk::with_defaults()?;
//! let (log, report) = Wal::open(disk, &dir, WalOptions::new()).await?;
//! assert_eq!(report.next_lsn, 1);
//! let lsn = log.append(b"first event").await?; // returns once durable
//! let mut reader = log.reader(1);
//! assert_eq!(reader.next().await?.map(|r| r.data), Some(b"first event".to_vec()));
//! log.close().await?;
//! # assert_eq!(lsn, 1);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! ## Guarantees
//!
//! - **Order and contiguity**: LSNs start at 1 and grow by one per record; the log is always a
//!   contiguous run of LSNs.
//! - **Durability** ([`Durability::Sync`], the default): `append` returns only once its record
//!   is written and `fdatasync`ed. Concurrent appends share one write and one sync (group
//!   commit); while a group is being written the next one gathers.
//! - **Nothing lost, nothing invented**: every record carries its length, LSN and a CRC32C that
//!   also covers a per-segment salt, so a torn, stale or misplaced record never verifies.
//!   Recovery cuts a torn tail and tells it apart from damage before the tail, which is an error
//!   by default ([`RecoveryMode`]).
//! - **Failure**: the first failed write or sync poisons the log. The group in flight and every
//!   later call fail with [`WalError::Poisoned`], naming the cause; nothing is acknowledged after
//!   it (a failed fsync is never retried as if the data were safe). Reopening recovers what is
//!   durable.
//! - **Other durability**: [`Durability::None`] returns once a record is queued and syncs only
//!   on [`Wal::sync`], rotation and close; [`Durability::Periodic`] also syncs on a timer.
//! - **Moving the end**: [`Wal::truncate_from`] drops a suffix (a replica's conflicting
//!   entries) and [`Wal::skip_to`] drops everything to continue at a later LSN (after a
//!   snapshot); both are crash-safe, and once they return no dropped record comes back.
//! - **Observability**: [`Wal::stats`] gives counters and the distributions of group size,
//!   commit latency and sync latency.
//! - **Bounded memory**: records above `record_max` are refused; `append` waits while
//!   `queued_bytes_max` bytes are queued; readers hold one window.
//!
//! The on-disk format is drawn in the source of the `format` module (`wal/src/format.rs`),
//! public for the fuzzer and the tests but not part of the documented API.
//!
//! ## What survives a crash, and what does not
//!
//! - **Survives**: every record whose `append` returned `Ok` in `Sync` mode, every record up to
//!   the LSN a successful `sync` returned, and every segment whose creation, rename or removal
//!   was followed by the log's own directory sync (it always does this before acknowledging
//!   anything in that segment).
//! - **May be lost**: records whose `append` had not returned (or returned an error), records
//!   appended with `Durability::None` or `Periodic` since the last sync, and nothing else. The
//!   log after recovery is always a contiguous prefix of what was submitted, with no record
//!   changed.
//! - **Cut at recovery**: a torn last group (partly written, never synced), and anything after
//!   it; the cut is reported. Damage followed by a later group is an error in `Strict` mode,
//!   because acknowledged data would go with it. Damage inside the last group cannot be told
//!   from a torn write by any log; it is reported as a cut.
//! - **After a failed write or sync** the log refuses everything (`Poisoned`); the data of that
//!   group may or may not be on disk, which the next recovery sorts out. A sync is never retried
//!   as if the kernel still held the data.
//!
//! How this is checked: a power-loss sweep over every I/O operation of a workload (10,000+ crash
//! states per test run, on a model disk where directory entries need a directory sync),
//! fail-at-N with EIO and ENOSPC, a corruption scan, `SIGKILL` of real appending processes, fuzzed
//! decoding and recovery, and recovery that itself fails at each step; see the crate's
//! `tests/`.
//!
//! ## Picking the backend
//!
//! [`DefaultDisk`] is the backend chosen by cargo feature: `blocking` (default,
//! `diskio_blocking::BlockingDisk`), `uring` (`diskio_uring::UringDisk`, tokio-uring on its own
//! threads) or `raw` (`diskio_raw::RawDisk`, diskio's own io_uring rings; it wins when both
//! io_uring features are on). Any `DiskIo` works with [`Wal::open`], including
//! `Arc<dyn DynDiskIo>` for a choice made at run time; with `raw` or `uring`, `auto_disk` picks
//! that io_uring backend when the kernel allows it and falls back to the blocking backend
//! otherwise, logging why.
//!
//! ## The commit path, and what it costs
//!
//! At one writer a durable append is worth what the disk's write + sync is worth, and every
//! hand-off between threads shows: waking a sleeping vCPU costs tens of µs on a virtual
//! machine, against about 100 µs for the sync itself. So the path has none that can be avoided:
//!
//! - **The appender that finds the log idle commits.** It runs the committer inside its own
//!   future: no task is spawned, and the disk's completion wakes the appender itself. Records
//!   queued meanwhile by other tasks form the next group; once the leader's record is durable,
//!   the committer goes on as a spawned task (also when the leader's future is dropped
//!   mid-commit, so nothing waits on a committer that is gone). Under load the groups grow and
//!   the same committer runs back to back.
//! - **One durable write per group**, [`DiskIo::write_sync_at`](diskio::DiskIo::write_sync_at):
//!   on `diskio-raw` and the blocking backend one write with `RWF_DSYNC`, which the kernel
//!   makes durable before it completes (on the log's `O_DIRECT` segments, whose blocks were
//!   zero-filled beforehand, a single FUA write where the device has FUA); on `diskio-uring`,
//!   `pwrite` + `fdatasync`. When nothing else is in flight, all three make that call on the
//!   appender's own thread.
//!
//! Measured on a 2-vCPU VM (ext4 on virtio), three invocations of `diskio-bench --features
//! peers`, 256-byte records, one writer, against the peer WALs and one thread calling `pwrite` +
//! `fdatasync` (the floor) in the same run: on the default (blocking) backend 8.4-9.1k
//! records/s, 0.91-1.21x the best peer, p50 0.93-1.12x the floor; on `diskio-raw` 0.96-1.06x
//! the best peer, p50 0.97-1.07x the floor. Before: 0.72-0.80x and 0.74x, p50 1.45x. CPU per
//! record: blocking 47-50 µs (139-164 before), raw 35-40 µs (86-88 before), the best peers
//! 45-57. No core spins for it: the waits sleep in the kernel.
//!
//! What the log itself spends per commit shows where the device costs nothing: `diskio-bench`'s
//! row `WAL durable, 1 writer, tmpfs` (the logs on `/dev/shm`). There a lone commit reads the
//! clock five times (as the record is queued; as its write + sync starts and ends, once each
//! for the log's statistics and the backend's), wakes nobody when nobody waits (an atomic
//! load), watches the durable watermark itself rather than waiting to be woken, and allocates
//! little besides the box its committer moves into (3.4 KiB). Three alternated pairs of
//! invocations against the version before, which read the clock nine times: on raw, p50
//! 2.0-2.8 µs against 3.6-3.7 and 2.4-3.0 µs of CPU per record against 3.9-4.2, 0.62-0.82x
//! okaywal's records/s against 0.49-0.53x (okaywal: p50 1.8-1.9 µs, 1.9-2.2 µs of CPU).
//!
//! Under load, one group is in flight at a time, and after a group of several records the
//! committer yields once before it takes the next: the appenders it just woke append again and
//! ride in that next group, instead of waiting out one more (an appender running the
//! committer in its own future does not yield: it returns once its record is durable). At 64
//! writers that took the log from 1.10-1.34x to 1.16-1.72x WriteAhead's records/s (1.3x or
//! more in 9 of 10 measurements: two backends, five runs), p99 from 0.61-1.10 ms to
//! 0.44-0.70 ms. More groups in flight would need their `O_DIRECT` blocks
//! kept apart (the next group rewrites the last block of the one before).
//!
//! Unsynced (`None`, `Periodic`), the log is bound by how fast the disk takes fresh blocks:
//! segments are preallocated, not zero-filled, and on the VM above fio writes preallocated
//! blocks with `O_DIRECT` at 1.2-1.75 GiB/s whatever the queue depth (blocks written before:
//! 1.8-3.4 GiB/s). The committer prepares each next group (checksums, the copy into a second
//! write buffer, index marks) while the one before it is written, so the disk is not left idle
//! for that part of the work; one write stays in flight. A single writer of 256-byte records,
//! two alternated invocations: 4.0-4.6M records/s on the blocking backend against 3.2-3.5M
//! before, 4.1M on raw against 3.8-3.9M. On a later VM, where `diskio-bench` measured fio's
//! sequential 4 MiB `O_DIRECT` writes of a new preallocated file at 1.7-2.0 GiB/s in the same
//! runs, one writer reached 0.79-1.06x that rate on blocking and 0.60-0.81x on raw.
//!
//! ## Segments
//!
//! Segments are files of `segment_bytes`, named by their first LSN. The next one is created,
//! zero-filled (in 256 KiB writes, so that a group commit queued behind one waits little) and
//! synced in the background under a temporary name; rotation writes its header,
//! renames it and syncs the directory, so appenders never wait for a 64 MiB fill. Group commits
//! then write over blocks that were written before, which makes their `fdatasync` cheaper than
//! one that grows the file.
//!
//! The fill keeps out of the commits' way. It yields to the runtime's other tasks after each
//! write (a backend may finish a lone write without ever returning `Pending`). Without
//! `O_DIRECT` it makes its zeros durable a write at a time, so that the final sync does not send
//! 64 MiB of dirty pages to the disk in one burst ahead of every commit's sync. And when the
//! log reaches the end of its segment before the next one is filled (at 1,024 durable
//! writers here the log writes about as fast as the disk takes the zeros), rotation does not
//! wait: the fill stops at its next write and preallocates the rest, whose commits then cost a
//! little more. [`WalStats::fills_cut`] counts those segments. Before these, 1,024 writers saw
//! p99.9 per append of 33-53 ms on raw and in the buffered mode (every appender stalled at the
//! end of each fill, or rotation waited up to 61 ms for one); after, 4.9-7.1 ms. The buffered
//! mode pays for it at 64 writers: p99 0.52-0.67 ms against 0.37-0.46 ms.
//!
//! ## `O_DIRECT`
//!
//! With [`WalOptions::direct_io`], segments are opened with `O_DIRECT` and every group is
//! written from the committer's aligned buffer as whole 4 KiB blocks, straight to the device:
//!
//! - A group starts at the block boundary before the end of the log: its write carries the
//!   bytes already in that block (kept in memory), then the group's frames, then zeros to the
//!   next boundary. The next group writes that last block again, completed.
//! - Rewriting a block that holds acknowledged records is safe because those bytes are written
//!   unchanged: a torn rewrite leaves each sector with its old or its new content, the same for
//!   them. The power-loss sweep checks this on a device with atomic sectors; a device that
//!   scrambles a sector it is writing would break this scheme (and the page cache's own
//!   write-back of partly filled pages in the buffered mode).
//! - The active segment's latest groups (up to 2 MiB) stay in memory, so readers of fresh
//!   records never go to the device; older records are read from the files.
//! - The page cache holds no copy of what the log writes, and the write costs no copy into it.
//!   `segment_bytes` must be a multiple of 4 KiB.
//! - Where the filesystem refuses `O_DIRECT` (tmpfs before Linux 6.6, some FUSE and network
//!   filesystems), `open` does not fail: the log writes through the page cache instead, logs
//!   why (`tracing` warning), and [`Wal::is_direct_io`] says so.
//!
//! ## Partitions
//!
//! [`Partitioned`] runs N logs in subdirectories and routes appends by a hash of a key, each
//! partition with its own order and LSNs (and its own committer, so partitions commit in
//! parallel).

#![forbid(unsafe_code)]

mod backend;
mod committer;
mod direct;
mod error;
#[doc(hidden)] // the on-disk format, public for the fuzzer and the tests; not a stable API
pub mod format;
mod group;
mod options;
mod partitioned;
mod queue;
mod reader;
mod recovery;
mod rewind;
mod segments;
mod state;
mod stats;
mod wakeup;
mod wal;
mod window;

pub use backend::DefaultDisk;
#[cfg(any(feature = "raw", feature = "uring"))]
pub use backend::auto_disk;
pub use error::{Damage, HeaderFault, Result, WalError};
pub use options::{Durability, RecoveryMode, WalOptions};
pub use partitioned::{PARTITIONS_MAX, Partitioned};
pub use reader::{Batch, Reader, Record};
pub use recovery::{Cut, RecoveryReport};
pub use stats::{Summary, WalStats};
pub use wal::Wal;

/// A log sequence number: 1 for the first record ever appended, one more for each next one.
pub type Lsn = u64;
