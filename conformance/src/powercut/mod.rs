//! A power-cutting filesystem: a FUSE filesystem, mounted in-process, that keeps every write in
//! its own memory until the file is synced and can then lose, on command, everything that was
//! not: what a real disk loses when the power goes. Unlike [`CrashDisk`](crate::CrashDisk),
//! which models power loss for code built on a `DiskIo`, this one sits below a real backend, so
//! it tells whether the backend's syncs reach the disk, through any path (a syscall, io_uring,
//! tokio-uring: each ends in the kernel's `fsync`, which FUSE hands to this filesystem).
//!
//! - **Files**: writes and size changes are kept in order until `fsync`/`fdatasync`, which makes
//!   the file's bytes durable.
//! - **Directories** (strict, like `CrashDisk`): creating, renaming or removing an entry is
//!   durable only once the directory is synced.
//! - **[`PowerCutFs::power_cut`]** drops everything not synced; [`Cut::ragged`] keeps a seeded
//!   random part of it and tears a write at 512-byte sectors. The report carries the seed.
//! - **Faults**: [`PowerCutFs::arm`] fails a chosen write or sync with `EIO` (once, or from
//!   then on); a failed file sync drops that file's unsynced changes, as Linux drops the dirty
//!   pages whose writeback failed (the fsyncgate case).
//! - **`O_DIRECT`** opens are served: every file is opened in FUSE's direct-I/O mode (no page
//!   cache between the backend and this filesystem), so direct and buffered I/O take the same
//!   path and there is no alignment to enforce.
//! - **`fallocate`** extends files (mode 0 and `KEEP_SIZE`), or is refused with `EOPNOTSUPP`
//!   ([`PowerCutFs::refuse_fallocate`]), as LazyFS and many FUSE filesystems do.
//!
//! The durable state lives in this process's memory, not in a backing directory: it is lost
//! with the process, which is all a test needs. Mounting needs `/dev/fuse`, the `fusermount3`
//! program (Debian's `fuse3` package) and the right to mount; where any is missing,
//! [`PowerCutFs::mount`] says which, and the scenarios report a skip with that reason.

mod model;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

pub use model::{Cut, CutReport};
use model::{Model, Node};

use crate::failing::FaultPlan;

/// Attributes and entries are never cached by the kernel: after a power cut it asks again.
const TTL: Duration = Duration::ZERO;

/// The power-cutting filesystem, mounted. Unmounted when dropped.
pub struct PowerCutFs {
    model: Arc<Mutex<Model>>,
    path: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

fn lock(model: &Mutex<Model>) -> MutexGuard<'_, Model> {
    // Every change to the model is whole before the lock is released.
    model.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PowerCutFs {
    /// Mounts an empty filesystem on `mountpoint` (an existing, empty directory).
    ///
    /// # Errors
    ///
    /// Why it cannot be mounted here (no `/dev/fuse`, no `fusermount3`, not allowed to
    /// mount), as a sentence for a skip.
    pub fn mount(mountpoint: &Path) -> Result<Self, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse on this machine (FUSE is not available)".to_owned());
        }
        let has_fusermount = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|p| p.join("fusermount3").exists())
        });
        if !has_fusermount {
            return Err(
                "no fusermount3 on PATH (install Debian's fuse3 package to run the power-cut \
                 scenarios)"
                    .to_owned(),
            );
        }
        let model = Arc::new(Mutex::new(Model::new()));
        let fs = Fuse {
            model: Arc::clone(&model),
        };
        let options = [
            MountOption::FSName("diskio-powercut".to_owned()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount2(fs, mountpoint, &options)
            .map_err(|e| format!("cannot mount FUSE on {}: {e}", mountpoint.display()))?;
        let fs = Self {
            model,
            path: mountpoint.to_path_buf(),
            session: Some(session),
        };
        fs.wait_mounted()?;
        Ok(fs)
    }

    /// Waits until the mount answers (the kernel's `init` is asynchronous).
    fn wait_mounted(&self) -> Result<(), String> {
        for _ in 0..500 {
            if is_mounted(&self.path) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(format!(
            "the FUSE mount on {} did not appear",
            self.path.display()
        ))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The power goes: what was not synced is dropped (or, with [`Cut::ragged`], partly kept
    /// and torn). Files the backend holds open stay open but see the disk's state.
    pub fn power_cut(&self, cut: Cut) -> CutReport {
        lock(&self.model).power_cut(cut)
    }

    /// Arms `plan` (a [`FaultTarget::Write`](crate::FaultTarget::Write) or
    /// [`Sync`](crate::FaultTarget::Sync) plan; the count starts again), or disarms with `None`.
    pub fn arm(&self, plan: Option<FaultPlan>) {
        lock(&self.model).arm(plan);
    }

    /// How many faults were injected.
    pub fn injected(&self) -> u64 {
        lock(&self.model).injected
    }

    /// Refuses every later request of process `pid` with `EIO`. Call it for a process killed
    /// before a [`power_cut`](Self::power_cut): a killed process's I/O still in the kernel
    /// (io_uring's workers, for one) can reach the filesystem after it is gone, and must not
    /// land after the cut.
    pub fn fence(&self, pid: u32) {
        lock(&self.model).fenced.insert(pid);
    }

    /// How many `fallocate` calls were refused.
    pub fn fallocates_refused(&self) -> u64 {
        lock(&self.model).fallocates_refused
    }

    /// Refuses `fallocate` with `EOPNOTSUPP` from now on (or accepts it again).
    pub fn refuse_fallocate(&self, refuse: bool) {
        lock(&self.model).refuse_fallocate = refuse;
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        // Dropping the session unmounts.
        drop(self.session.take());
    }
}

fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = path.to_string_lossy();
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next() == Some("diskio-powercut") && f.next().is_some_and(|p| p == want)
    })
}

/// The FUSE side: each request becomes a call on the model.
struct Fuse {
    model: Arc<Mutex<Model>>,
}

fn attr(ino: u64, node: &Node) -> FileAttr {
    let (kind, size, perm, nlink) = match node {
        Node::File { current, .. } => (FileType::RegularFile, current.len() as u64, 0o644, 1),
        Node::Dir { entries, .. } => (FileType::Directory, entries.len() as u64, 0o755, 2),
    };
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Answers `reply` with `res`.
fn empty(reply: ReplyEmpty, res: Result<(), i32>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// Every open file is in FUSE's direct-I/O mode: no page cache to survive a power cut.
const OPEN_FLAGS: u32 = fuser::consts::FOPEN_DIRECT_IO;

impl Fuse {
    fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.model)
    }

    /// The model, for a request that changes it: `EIO` for a fenced process.
    fn change(&self, req: &Request<'_>) -> Result<MutexGuard<'_, Model>, i32> {
        let model = self.model();
        if model.fenced.contains(&req.pid()) {
            return Err(libc::EIO);
        }
        Ok(model)
    }

    fn entry(&self, ino: Result<u64, i32>, reply: ReplyEntry) {
        let model = self.model();
        match ino.and_then(|ino| model.node(ino).map(|n| attr(ino, n))) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Fuse {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let ino = self.model().lookup(parent, name);
        self.entry(ino, reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let model = self.model();
        match model.node(ino) {
            Ok(n) => reply.attr(&TTL, &attr(ino, n)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut model = match self.change(req) {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        if let Some(len) = size
            && let Err(e) = model.set_len(ino, len)
        {
            return reply.error(e);
        }
        match model.node(ino) {
            Ok(n) => reply.attr(&TTL, &attr(ino, n)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(libc::EPERM);
        }
        let ino = self
            .change(req)
            .and_then(|mut m| m.make(parent, name, false));
        self.entry(ino, reply);
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let ino = self
            .change(req)
            .and_then(|mut m| m.make(parent, name, true));
        self.entry(ino, reply);
    }

    fn unlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.change(req)
                .and_then(|mut m| m.remove(parent, name, false)),
        );
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.change(req)
                .and_then(|mut m| m.remove(parent, name, true)),
        );
    }

    fn rename(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return reply.error(libc::EINVAL);
        }
        let no_replace = flags & libc::RENAME_NOREPLACE != 0;
        let res = self
            .change(req)
            .and_then(|mut m| m.rename(parent, name, newparent, newname, no_replace));
        empty(reply, res);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.model().node(ino) {
            Ok(_) => reply.opened(0, OPEN_FLAGS),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(libc::EPERM);
        }
        let mut model = match self.change(req) {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        match model
            .make(parent, name, false)
            .and_then(|ino| model.node(ino).map(|n| attr(ino, n)))
        {
            Ok(a) => reply.created(&TTL, &a, 0, 0, OPEN_FLAGS),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let model = self.model();
        match model.read(ino, offset.max(0) as u64, size as usize) {
            Ok(bytes) => reply.data(bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        // A write with `RWF_DSYNC`/`RWF_SYNC` (or to a file opened `O_DSYNC`/`O_SYNC`) reaches a
        // FUSE filesystem with `O_DSYNC` in its flags, and no separate sync: the filesystem
        // makes it durable itself, as the kernel does for a local one.
        let dsync = flags & libc::O_DSYNC != 0;
        match self.change(req).and_then(|mut m| {
            let n = m.write(ino, offset.max(0) as u64, data)?;
            if dsync {
                m.fsync(ino)?;
            }
            Ok(n)
        }) {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        empty(reply, Ok(()));
    }

    fn fsync(&mut self, req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        empty(reply, self.change(req).and_then(|mut m| m.fsync(ino)));
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.model().node(ino) {
            Ok(Node::Dir { .. }) => reply.opened(0, 0),
            Ok(Node::File { .. }) => reply.error(libc::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let model = self.model();
        let entries = match model.node(ino) {
            Ok(Node::Dir { entries, .. }) => entries,
            Ok(Node::File { .. }) => return reply.error(libc::ENOTDIR),
            Err(e) => return reply.error(e),
        };
        let mut all: Vec<(u64, FileType, &OsStr)> = vec![
            (ino, FileType::Directory, OsStr::new(".")),
            (ino, FileType::Directory, OsStr::new("..")),
        ];
        for (name, &child) in entries {
            let kind = match model.node(child) {
                Ok(Node::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((child, kind, name.as_os_str()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.change(req).and_then(|mut m| m.fsyncdir(ino)));
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let (offset, length) = (offset.max(0) as u64, length.max(0) as u64);
        let res = self
            .change(req)
            .and_then(|mut m| m.fallocate(ino, offset, length, mode));
        empty(reply, res);
    }
}
