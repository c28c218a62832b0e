//! Segments: preparing the next one in the background, publishing it, rotating to it, creating
//! one when none was prepared, and retention (dropping whole segments before an LSN).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use diskio::{AlignedBuf, DiskIo, FileId, OpenOptions, SyncKind};

use crate::Lsn;
use crate::direct::check_direct;
use crate::error::Result;
use crate::format::{HEADER_LEN, Salt, SegmentHeader, TEMP_SUFFIX, segment_name};
use crate::options::Durability;
use crate::state::{Active, Inner, Prepared, SegmentRef};

/// Bytes of zeros per write when a new segment is filled. The fill runs while group commits
/// go on, and a commit that reaches the device behind a fill write waits for it. Measured with
/// 64 durable writers on diskio-raw, six 2 s runs each: 1 MiB chunks gave p99 per append
/// 0.45-1.28 ms (median 1.08) and p99.9 1.6-3.6 ms; 256 KiB gave p99 0.50-1.22 ms (median 0.58)
/// and p99.9 mostly near 1 ms, at the same records/s. 64 KiB chunks left the fill unfinished
/// when rotation needed the segment (p99.9 15 ms).
const FILL_CHUNK: u64 = 256 << 10;

/// Without `O_DIRECT`, the fill makes its zeros durable every this many bytes. Before, the
/// segment's final sync sent its 64 MiB of dirty pages to the disk in one burst, and at 1,024
/// durable writers every commit's sync waited behind it: p99.9 per append 38-53 ms. Synced
/// every chunk, 4.9-7.1 ms; every 1 MiB, still 26-29 ms. The price is one more flush per
/// chunk while commits go on: at 64 writers the buffered mode's p99 went from 0.37-0.46 ms to
/// 0.52-0.67 ms.
const FILL_SYNC_EVERY: u64 = FILL_CHUNK;

impl<D: DiskIo> Inner<D> {
    /// Seals the active segment (synced, closed) and starts a new one at the next queued LSN,
    /// from the file prepared in the background when there is one.
    pub(crate) async fn rotate(inner: &Arc<Self>) -> diskio::Result<()> {
        let (old_file, first, unsynced) = {
            let st = inner.lock();
            match &st.segments.active {
                Some(a) => (
                    a.file,
                    st.pending.first,
                    st.marks.durable_end < st.marks.written_end,
                ),
                None => return Ok(()),
            }
        };
        // Every record of the old segment is durable before any record goes to the new one, so
        // recovery can trust that a sealed segment's end is final.
        if unsynced {
            inner.sync_active(old_file).await?;
        }
        let fresh = match inner.take_prepared().await {
            Some(p) => inner.publish(p, first).await?,
            None => inner.create_segment(first).await?,
        };
        {
            let mut st = inner.lock();
            debug_assert_eq!(
                st.marks.written_end, first,
                "rotation with records unwritten"
            );
            if let Some(old) = st.segments.active.replace(fresh) {
                st.segments.sealed.push(old.seg);
            }
        }
        // The new segment's records start at a block boundary (after its header).
        inner.direct.restart(first, HEADER_LEN as u64);
        inner.counters.rotations.fetch_add(1, Ordering::Relaxed);
        inner.disk.close(old_file).await?;
        Self::start_preparing(inner);
        Ok(())
    }

    /// Starts preparing the next segment in the background, unless one is ready or under way
    /// (or no Tokio runtime is at hand: rotation then creates the segment itself).
    pub(crate) fn start_preparing(inner: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let n = {
            let mut st = inner.lock();
            let segs = &mut st.segments;
            if segs.preparing || segs.prepared.is_some() {
                return;
            }
            if st.closed || st.poison.is_some() {
                return;
            }
            st.segments.preparing = true;
            st.segments.rush = false;
            st.segments.prepared_count += 1;
            st.segments.prepared_count
        };
        let inner = Arc::clone(inner);
        handle.spawn(async move {
            let made = inner.prepare_file(n).await;
            {
                let mut st = inner.lock();
                st.segments.preparing = false;
                match made {
                    Ok(p) => st.segments.prepared = Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "preparing the next WAL segment failed; rotation will create it");
                    }
                }
            }
            inner.progress.wake();
        });
    }

    /// The prepared segment file, waiting for it if it is being made.
    async fn take_prepared(&self) -> Option<Prepared> {
        let mut taken = None;
        self.lock().segments.rush = true;
        self.wait_for(|st| {
            taken = st.segments.prepared.take();
            taken.is_some() || !st.segments.preparing
        })
        .await;
        taken
    }

    /// Creates a segment-sized file under a temporary name, filled (zeros, or preallocated) and
    /// synced, so that later group commits into it have no metadata to journal.
    async fn prepare_file(&self, n: u64) -> diskio::Result<Prepared> {
        let path = self.dir.join(format!("prepared-{n}{TEMP_SUFFIX}"));
        let file = self
            .disk
            .open(
                &path,
                &OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .direct(self.opts.direct_io),
            )
            .await?;
        let made = async {
            check_direct(&self.disk, file)?;
            self.fill(file, true).await?;
            self.disk.fsync(file, SyncKind::All).await
        }
        .await;
        if let Err(e) = made {
            let _ = self.disk.close(file).await;
            let _ = self.disk.remove_file(&path).await;
            return Err(e);
        }
        Ok(Prepared { file, path })
    }

    /// Writes the header of a prepared file and gives it its segment name (synced, directory
    /// synced): from here on it is part of the log.
    async fn publish(&self, p: Prepared, first: Lsn) -> diskio::Result<Active> {
        let salt = self.write_header(p.file, first).await?;
        let path = self.dir.join(segment_name(first));
        self.disk.rename(&p.path, &path).await?;
        self.disk.sync_dir(&self.dir).await?;
        Ok(Active {
            seg: SegmentRef {
                first_lsn: first,
                path,
                index: Arc::default(),
                salt,
            },
            file: p.file,
            offset: HEADER_LEN as u64,
        })
    }

    /// Fills a new segment file: zeros over the whole size (`zero_fill`, `Sync` durability), else
    /// preallocation; where the filesystem cannot preallocate (`EOPNOTSUPP`), the file is grown
    /// to its size instead and its blocks are allocated as the log fills it.
    ///
    /// A fill in the background (`rushable`) that rotation finds unfinished stops at the next
    /// chunk and preallocates the rest: the log's commits into that rest cost a little more
    /// (the filesystem marks its blocks written as they sync), where waiting for the zeros
    /// would stall every appender. At 1,024 durable writers the log writes about as fast as
    /// the fill, and rotations waited up to 61 ms for it.
    async fn fill(&self, file: FileId, rushable: bool) -> diskio::Result<()> {
        let size = self.opts.segment_bytes;
        // Written blocks make a per-group sync cheaper; without one (None, Periodic) zeros would
        // only double what goes to the disk.
        if !self.opts.zero_fill || self.opts.durability != Durability::Sync {
            return self.preallocate(file, 0, size).await;
        }
        let disk = &self.disk;
        let chunk = FILL_CHUNK.min(size) as usize;
        // One buffer of zeros for the whole fill: every write gives it back unchanged (a
        // buffer not given back is made again).
        let new_zeros = || -> diskio::Result<AlignedBuf> {
            let mut zeros = disk.alloc(chunk)?;
            zeros.clear();
            zeros.resize(chunk)?;
            Ok(zeros)
        };
        let mut zeros = new_zeros()?;
        let mut at = 0u64;
        while at < size {
            if rushable && self.lock().segments.rush {
                tracing::debug!(
                    filled = at,
                    size,
                    "rotation came before the next segment was zero-filled; preallocating the rest"
                );
                self.counters.fills_cut.fetch_add(1, Ordering::Relaxed);
                return self.preallocate(file, at, size - at).await;
            }
            let n = chunk.min((size - at) as usize);
            if zeros.len() < n {
                zeros = new_zeros()?;
            }
            zeros.truncate(n);
            let end = at + n as u64;
            // Through the page cache, the zeros go to the disk a chunk at a time, not all at once
            // when the segment is synced at the end (ahead of every commit's sync).
            let res;
            (res, zeros) = if !self.opts.direct_io && end < size && end % FILL_SYNC_EVERY == 0 {
                let (res, mut back) = disk
                    .write_sync_at(file, vec![zeros], at, SyncKind::Data)
                    .await;
                (res.map(drop), back.pop().unwrap_or_default())
            } else {
                let (res, back) = disk.write_all_at(file, zeros, at).await;
                (res.map(drop), back)
            };
            res?;
            at = end;
            // A backend may finish a lone write on this thread without ever returning
            // `Pending`; give the runtime's other tasks (appenders, the committer) their turn
            // between chunks rather than after the whole segment.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Preallocates `len` bytes at `offset`, or grows the file to the end of that range where
    /// the filesystem cannot preallocate (`EOPNOTSUPP`).
    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> diskio::Result<()> {
        match self.disk.preallocate(file, offset, len).await {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                tracing::debug!(error = %e, "the filesystem cannot preallocate a WAL segment; growing it instead");
                self.disk.set_len(file, offset + len).await
            }
            other => other,
        }
    }

    /// Writes (and syncs) the header of the segment starting at `first`; returns its salt.
    async fn write_header(&self, file: FileId, first: Lsn) -> diskio::Result<Salt> {
        let salt = Salt::new(random_salt(first));
        let mut header = [0u8; HEADER_LEN];
        SegmentHeader {
            first_lsn: first,
            salt,
        }
        .encode(&mut header);
        let buf = AlignedBuf::from_slice(&header, self.disk.alignment())?;
        let (res, _) = self
            .disk
            .write_sync_at(file, vec![buf], 0, SyncKind::Data)
            .await;
        res?;
        Ok(salt)
    }

    /// Creates, fills, syncs and publishes (directory sync) the segment whose first LSN is
    /// `first`, on the caller's path (the first segment, or when none was prepared).
    pub(crate) async fn create_segment(&self, first: Lsn) -> diskio::Result<Active> {
        let path = self.dir.join(segment_name(first));
        let active = self.create_file(path, first).await?;
        self.disk.sync_dir(&self.dir).await?;
        Ok(active)
    }

    /// Creates the file `path` (which must not exist) as a segment whose first LSN is `first`:
    /// filled, header written, synced; the directory is not synced.
    pub(crate) async fn create_file(&self, path: PathBuf, first: Lsn) -> diskio::Result<Active> {
        let disk = &self.disk;
        let file = disk
            .open(
                &path,
                &OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .direct(self.opts.direct_io),
            )
            .await?;
        let made = async {
            check_direct(disk, file)?;
            self.fill(file, false).await?;
            let salt = self.write_header(file, first).await?;
            disk.fsync(file, SyncKind::All).await?;
            Ok(salt)
        }
        .await;
        let salt = match made {
            Ok(salt) => salt,
            Err(e) => {
                let _ = disk.close(file).await;
                return Err(e);
            }
        };
        Ok(Active {
            seg: SegmentRef {
                first_lsn: first,
                path,
                index: Arc::default(),
                salt,
            },
            file,
            offset: HEADER_LEN as u64,
        })
    }

    /// Retention: removes every sealed segment whose records all come before `lsn` (the
    /// directory synced after); returns the first LSN still in the log.
    pub(crate) async fn remove_before(&self, lsn: Lsn) -> Result<Lsn> {
        let _one_at_a_time = self.rewrites.lock().await;
        let (doomed, first) = {
            let mut st = self.lock();
            st.usable()?;
            let segs = &mut st.segments;
            let mut n = 0;
            while n < segs.sealed.len() {
                let next_first = segs
                    .sealed
                    .get(n + 1)
                    .or(segs.active.as_ref().map(|a| &a.seg))
                    .map_or(Lsn::MAX, |s| s.first_lsn);
                if next_first > lsn {
                    break;
                }
                n += 1;
            }
            let doomed: Vec<SegmentRef> = segs.sealed.drain(..n).collect();
            if !doomed.is_empty() {
                let next_lsn = st.next_lsn;
                let segs = &mut st.segments;
                segs.first_lsn = segs
                    .sealed
                    .first()
                    .or(segs.active.as_ref().map(|a| &a.seg))
                    .map_or(next_lsn, |s| s.first_lsn);
            }
            (doomed, st.segments.first_lsn)
        };
        if doomed.is_empty() {
            return Ok(first);
        }
        for seg in &doomed {
            self.disk.remove_file(&seg.path).await?;
        }
        self.disk.sync_dir(&self.dir).await?;
        Ok(first)
    }
}

/// A salt that differs between segments and between runs: the time, the process, the LSN.
fn random_salt(first: Lsn) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = now ^ (u64::from(std::process::id()) << 32) ^ first.rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
