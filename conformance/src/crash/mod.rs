//! `CrashDisk`: an in-memory disk that simulates power loss.
//!
//! Every file has a **live** image (what reads see) and a **durable** image (what survives a
//! power loss). Writes, length changes and preallocations change the live image at once and are
//! remembered as *pending* until a sync of that file makes the live image durable. A simulated
//! power loss ([`CrashDisk::crash`]) builds a new disk from the durable images plus, for each
//! pending operation in order, a seeded choice: **keep** it, **drop** it, **tear** it (each
//! 512-byte sector of a write kept or lost on its own), or tear it with **garbage** in the lost
//! sectors. The seed is printed, and the same seed on
//! the same history gives the same disk, so a failure replays exactly.
//!
//! Directory entries: by default a file exists (after a crash too) from the moment it is created
//! and is gone from the moment it is removed. With [`CrashDisk::strict_directories`], creating,
//! removing and renaming change only the live namespace until `sync_dir` of the directory; a
//! power loss keeps the names as of the last `sync_dir`. A sync of a file makes every earlier
//! operation on it durable (its contents, not its name).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use diskio::backend::{Admitted, FileAccess, OpBufs, Refused, Request, Stats, admit};
use diskio::{
    AlignedBuf, BadFileReason, BufResult, Capabilities, Context, DirectAlignment, DiskIo, Error,
    FileId, Op, OpenOptions, Result, StatsSnapshot, SyncKind,
};

mod image;
mod sweep;

pub use self::sweep::{Sweep, SweepReport};

use self::image::{MemFile, Pending, State, crash_image, write_into};

/// The sector size of the simulated device: the unit of torn writes.
pub const SECTOR: usize = 512;

const DIRECT: DirectAlignment = DirectAlignment {
    memory: SECTOR as u32,
    offset: SECTOR as u32,
};

/// What happens to each unsynced operation at a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Each operation is kept, dropped or torn, by the seed.
    Random,
    /// Every unsynced operation survives (the cache was flushed just in time).
    KeepAll,
    /// Every unsynced operation is lost.
    DropAll,
    /// Every unsynced write is torn at sector granularity by the seed.
    TearAll,
    /// Every unsynced write is torn, and each sector it lost holds garbage (seeded bytes)
    /// instead of what was there: a device that scrambles what it was writing when the power
    /// went.
    GarbageAll,
    /// Each operation is kept, dropped or torn at whole sectors, by the seed, never garbage: a
    /// device whose sector writes are atomic (a sector holds its old or its new bytes). What
    /// code that rewrites a partly filled block relies on.
    RandomAtomic,
}

/// An in-memory [`DiskIo`] with a simulated power loss. Paths are names in its own namespace;
/// no real file is touched.
///
/// ```
/// use conformance::{CrashDisk, CrashMode};
/// use diskio::{AlignedBuf, DiskIo, OpenOptions, SyncKind};
///
/// let disk = CrashDisk::new();
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     let f = disk.open("log".as_ref(), &OpenOptions::read_write_create()).await?;
///     let (res, _) = disk.write_at(f, AlignedBuf::from_slice(b"durable", 512)?, 0).await;
///     res?;
///     disk.fsync(f, SyncKind::Data).await?;
///     let (res, _) = disk.write_at(f, AlignedBuf::from_slice(b"lost", 512)?, 7).await;
///     res?;
///     let after = disk.crash_with(42, CrashMode::DropAll);
///     assert_eq!(after.file_image("log".as_ref()).unwrap(), b"durable");
///     Ok::<(), diskio::Error>(())
/// })?;
/// # Ok::<(), diskio::Error>(())
/// ```
#[derive(Clone)]
pub struct CrashDisk {
    state: Arc<Mutex<State>>,
    stats: Stats,
}

impl Default for CrashDisk {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CrashDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashDisk")
            .field("unsynced", &self.unsynced_ops())
            .finish_non_exhaustive()
    }
}

impl CrashDisk {
    /// An empty disk whose directory entries (files created, removed, renamed) are durable at
    /// once; see [`strict_directories`](Self::strict_directories) for the stricter model.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                next_id: 1,
                ..State::default()
            })),
            stats: Stats::new(),
        }
    }

    /// This disk, with directory entries that survive a power loss only once `sync_dir` of their
    /// directory returned: a file created (or renamed into place) and not covered by it
    /// disappears at a crash, a removed one comes back, a renamed one has its old name.
    pub fn strict_directories(self) -> Self {
        self.lock().strict_dirs = true;
        self
    }

    /// For [`suite!`](crate::suite)-style constructors.
    ///
    /// # Errors
    ///
    /// Never; the `Result` matches what backend constructors return.
    pub fn create() -> Result<Self> {
        Ok(Self::new())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A power loss with [`CrashMode::Random`]: see [`crash_with`](Self::crash_with).
    pub fn crash(&self, seed: u64) -> CrashDisk {
        self.crash_with(seed, CrashMode::Random)
    }

    /// The disk as it would be found after a power loss now: durable images plus the pending
    /// operations that `mode` and `seed` let through. This disk is left as it was (so one history
    /// can be crashed many ways); the new one has no open files and no pending operations. The
    /// seed is printed to stderr (shown when a test fails) so the state can be replayed.
    pub fn crash_with(&self, seed: u64, mode: CrashMode) -> CrashDisk {
        eprintln!("CrashDisk: power loss with seed {seed} ({mode:?})");
        let state = self.lock();
        crash_image(&state.img, state.strict_dirs, seed, mode)
    }

    /// Arms a snapshot: right after the `n`th operation that changes the disk or asks for
    /// durability (writes, length changes, syncs, creating, removing or renaming a file, directory
    /// syncs; counted from 1), the files are set aside as they are. A power loss at exactly that
    /// point is then [`crash_frozen`](Self::crash_frozen), while the workload runs on to its end.
    /// Running a workload once per `n` crashes it after every one of its operations.
    pub fn freeze_after(&self, n: u64) {
        let mut state = self.lock();
        state.freeze_at = Some(n);
        state.frozen = None;
    }

    /// Whether the snapshot armed by [`freeze_after`](Self::freeze_after) has been taken: an
    /// acknowledgement seen while this is `false` came before the crash point.
    pub fn is_frozen(&self) -> bool {
        self.lock().frozen.is_some()
    }

    /// Operations counted so far (see [`freeze_after`](Self::freeze_after)).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// A power loss at the snapshot point (as [`crash_with`](Self::crash_with) would have given
    /// then), or `None` if the workload never reached it.
    pub fn crash_frozen(&self, seed: u64, mode: CrashMode) -> Option<CrashDisk> {
        let state = self.lock();
        state
            .frozen
            .as_ref()
            .map(|img| crash_image(img, state.strict_dirs, seed, mode))
    }

    /// Counts an operation; takes the snapshot if this is the one armed.
    fn tick(&self) {
        let mut state = self.lock();
        state.ops += 1;
        if state.freeze_at == Some(state.ops) && state.frozen.is_none() {
            state.frozen = Some(state.img.clone());
        }
    }
}

impl CrashDisk {
    /// Damages the medium: `bytes` replace the file's contents at `offset`, in what reads see
    /// and in what survives a power loss alike, without being an operation of the disk (no
    /// pending write, not counted by [`ops`](Self::ops)). For corruption tests.
    ///
    /// # Errors
    ///
    /// `ENOENT` if there is no such file.
    pub fn damage(&self, path: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
        let mut state = self.lock();
        let Some(f) = state.img.files.get_mut(path) else {
            return Err(Error::from_errno(
                Context::new(Op::Write).path(path),
                libc::ENOENT,
            ));
        };
        write_into(&mut f.live, offset, bytes);
        write_into(&mut f.durable, offset, bytes);
        Ok(())
    }

    /// Operations not yet covered by a sync, over all files.
    pub fn unsynced_ops(&self) -> usize {
        self.lock()
            .img
            .files
            .values()
            .map(|f| f.pending.len())
            .sum()
    }

    /// The live contents of a file (what reads see), if it exists.
    pub fn file_image(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().img.files.get(path).map(|f| f.live.clone())
    }

    /// The durable contents of a file (what survives any crash), if it exists.
    pub fn durable_image(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().img.files.get(path).map(|f| f.durable.clone())
    }

    /// Admits an operation on an open file, as every backend does ([`admit`]).
    fn admit<B: OpBufs>(
        &self,
        req: Request,
        bufs: B,
    ) -> std::result::Result<(Admitted<FileAccess>, B), Refused<B>> {
        admit(
            &self.stats,
            req,
            bufs,
            |ctx| self.access(req.file, ctx),
            |a| a,
        )
    }

    /// The open file's record.
    fn access(&self, id: FileId, ctx: &Context) -> Result<FileAccess> {
        let state = self.lock();
        let raw = id.into_raw();
        match state.open.get(&raw) {
            Some(access) => Ok(access.clone()),
            None => {
                let reason = if raw != 0 && raw < state.next_id {
                    BadFileReason::Closed
                } else {
                    BadFileReason::Unknown
                };
                Err(Error::BadFile {
                    ctx: ctx.clone().file(id),
                    reason,
                })
            }
        }
    }

    /// Runs `f` on the data of the file at `path` (an admitted file's).
    fn with_file<T>(
        &self,
        path: &Path,
        ctx: &Context,
        f: impl FnOnce(&mut MemFile) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.lock();
        match state.img.files.get_mut(path) {
            Some(file) => f(file),
            None => Err(Error::from_errno(ctx.clone().path(path), libc::ENOENT)),
        }
    }
}

/// In-memory files are capped at 1 GiB: a model for tests, not a RAM disk.
const FILE_BYTES_MAX: u64 = 1 << 30;

fn check_size(ctx: &Context, end: u64) -> Result<()> {
    if end > FILE_BYTES_MAX {
        return Err(Error::from_errno(ctx.clone(), libc::EFBIG));
    }
    Ok(())
}

impl CrashDisk {
    /// `write_at` and `writev_at`: the buffers back to back at `offset`, pending until a sync.
    fn write_bufs<B: OpBufs + AsParts>(
        &self,
        op: Op,
        file: FileId,
        bufs: B,
        offset: u64,
    ) -> BufResult<usize, B> {
        let (op, bufs) = diskio::admitted!(self.admit(Request::at(op, file, offset), bufs));
        let len = op.ctx.len.unwrap_or(0);
        let res = check_size(&op.ctx, offset + len).and_then(|()| {
            self.with_file(&op.file.path, &op.ctx, |f| {
                let data: Vec<u8> = bufs.as_parts().concat();
                if data.is_empty() {
                    return Ok(0);
                }
                write_into(&mut f.live, offset, &data);
                f.pending.push(Pending::Write { offset, data });
                Ok(len as usize)
            })
        });
        op.timer.finish(&res, |&n| n as u64);
        if res.is_ok() {
            self.tick();
        }
        (res, bufs)
    }
}

/// The bytes of a write's buffers, in order.
trait AsParts {
    fn as_parts(&self) -> Vec<&[u8]>;
}

impl AsParts for AlignedBuf {
    fn as_parts(&self) -> Vec<&[u8]> {
        vec![&self[..]]
    }
}

impl AsParts for Vec<AlignedBuf> {
    fn as_parts(&self) -> Vec<&[u8]> {
        self.iter().map(|b| &b[..]).collect()
    }
}

impl DiskIo for CrashDisk {
    fn name(&self) -> &'static str {
        "crash"
    }

    fn alignment(&self) -> usize {
        SECTOR
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.direct_io = true;
        caps
    }

    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        let timer = self.stats.start(Op::Open);
        let ctx = Context::new(Op::Open).path(Arc::from(path));
        let res = (|| {
            let wants_create =
                options.is_create() || options.is_create_new() || options.is_truncate();
            if wants_create && !options.is_write() {
                return Err(Error::io(
                    ctx.clone(),
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "creating or truncating a file needs write access",
                    ),
                ));
            }
            let mut state = self.lock();
            let exists = state.img.files.contains_key(path);
            if exists && options.is_create_new() {
                return Err(Error::from_errno(ctx.clone(), libc::EEXIST));
            }
            if !(exists || options.is_create() || options.is_create_new()) {
                return Err(Error::from_errno(ctx.clone(), libc::ENOENT));
            }
            if !exists {
                state.next_file += 1;
                let id = state.next_file;
                state.img.files.insert(
                    path.to_path_buf(),
                    MemFile {
                        id,
                        ..MemFile::default()
                    },
                );
                state.entries_changed(path);
            }
            let Some(file) = state.img.files.get_mut(path) else {
                return Err(Error::from_errno(ctx.clone(), libc::ENOENT));
            };
            let mut changed = !exists;
            if options.is_truncate() && !file.live.is_empty() {
                file.live.clear();
                file.pending.push(Pending::SetLen(0));
                changed = true;
            }
            let id = state.next_id;
            state.next_id += 1;
            state
                .open
                .insert(id, FileAccess::new(Arc::from(path), options, DIRECT));
            Ok((FileId::from_raw(id), changed))
        })();
        let res = res.map(|(id, changed)| {
            if changed {
                self.tick();
            }
            id
        });
        timer.finish(&res, |_| 0);
        res
    }

    async fn close(&self, file: FileId) -> Result<()> {
        let timer = self.stats.start(Op::Close);
        let ctx = Context::new(Op::Close);
        let res = self.access(file, &ctx).map(|_| {
            self.lock().open.remove(&file.into_raw());
        });
        timer.finish(&res, |_| 0);
        res
    }

    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        let (op, mut buf) = diskio::admitted!(self.admit(Request::at(Op::Read, file, offset), buf));
        let res = self.with_file(&op.file.path, &op.ctx, |f| {
            let start = (offset as usize).min(f.live.len());
            let end = (offset as usize)
                .saturating_add(buf.len())
                .min(f.live.len());
            let n = end - start;
            buf[..n].copy_from_slice(&f.live[start..end]);
            buf.truncate(n);
            Ok(n)
        });
        op.timer.finish(&res, |&n| n as u64);
        (res, buf)
    }

    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        self.write_bufs(Op::Write, file, buf, offset)
    }

    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        self.write_bufs(Op::Writev, file, bufs, offset)
    }

    async fn fsync(&self, file: FileId, _kind: SyncKind) -> Result<()> {
        let (op, ()) = self
            .admit(Request::new(Op::Sync, file), ())
            .map_err(|(e, ())| e)?;
        let res = self.with_file(&op.file.path, &op.ctx, |f| {
            f.durable.clone_from(&f.live);
            f.pending.clear();
            Ok(())
        });
        op.timer.finish(&res, |_| 0);
        if res.is_ok() {
            self.tick();
        }
        res
    }

    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        let req = Request::at(Op::Preallocate, file, offset).len(len);
        let (op, ()) = self.admit(req, ()).map_err(|(e, ())| e)?;
        let res = check_size(&op.ctx, offset + len).and_then(|()| {
            self.with_file(&op.file.path, &op.ctx, |f| {
                let end = offset + len;
                if len > 0 && end > f.live.len() as u64 {
                    f.live.resize(end as usize, 0);
                    f.pending.push(Pending::SetLen(end));
                }
                Ok(())
            })
        });
        op.timer.finish(&res, |_| 0);
        if res.is_ok() {
            self.tick();
        }
        res
    }

    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        let req = Request::new(Op::SetLen, file).len(len);
        let (op, ()) = self.admit(req, ()).map_err(|(e, ())| e)?;
        let res = check_size(&op.ctx, len).and_then(|()| {
            self.with_file(&op.file.path, &op.ctx, |f| {
                f.live.resize(len as usize, 0);
                f.pending.push(Pending::SetLen(len));
                Ok(())
            })
        });
        op.timer.finish(&res, |_| 0);
        if res.is_ok() {
            self.tick();
        }
        res
    }

    async fn file_len(&self, file: FileId) -> Result<u64> {
        let (op, ()) = self
            .admit(Request::new(Op::FileLen, file), ())
            .map_err(|(e, ())| e)?;
        let res = self.with_file(&op.file.path, &op.ctx, |f| Ok(f.live.len() as u64));
        op.timer.finish(&res, |_| 0);
        res
    }

    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>> {
        Ok(self.access(file, &Context::new(Op::FileLen))?.direct)
    }

    fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        let state = self.lock();
        let mut names: Vec<String> = state
            .img
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn create_dir_all(&self, _dir: &Path) -> Result<()> {
        // Directories are implicit in this namespace.
        Ok(())
    }

    async fn remove_file(&self, path: &Path) -> Result<()> {
        let removed = {
            let mut state = self.lock();
            let removed = state.img.files.remove(path);
            if let Some(f) = removed {
                state.detach(f);
                state.entries_changed(path);
                true
            } else {
                false
            }
        };
        match removed {
            true => {
                self.tick();
                Ok(())
            }
            false => Err(Error::from_errno(
                Context::new(Op::Dir).path(path),
                libc::ENOENT,
            )),
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut state = self.lock();
        let Some(file) = state.img.files.remove(from) else {
            return Err(Error::from_errno(
                Context::new(Op::Dir).path(from),
                libc::ENOENT,
            ));
        };
        if let Some(replaced) = state.img.files.insert(to.to_path_buf(), file) {
            state.detach(replaced);
        }
        state.entries_changed(from);
        state.entries_changed(to);
        // Open handles follow the file, as descriptors do.
        let to: Arc<Path> = Arc::from(to);
        for access in state.open.values_mut() {
            if *access.path == *from {
                access.path = Arc::clone(&to);
            }
        }
        drop(state);
        self.tick();
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        // Without strict directories the entries are durable already; the call is still a
        // point a power loss can come before or after.
        self.lock().sync_entries(dir);
        self.tick();
        Ok(())
    }
}
