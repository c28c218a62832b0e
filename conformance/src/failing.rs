//! `FailingDisk`: a wrapper that fails the Nth write or sync with a chosen `errno`, and can
//! make the writes to chosen files slow.
//!
//! The tool for "fail at N" loops (SQLite's I/O error tests): run a workload with the fault at
//! N = 1, 2, 3, ... until it completes without hitting the fault, and check at every N that the
//! code above the disk reacted correctly.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use diskio::backend::{OpBufs, Refused, Request};
use diskio::{
    AlignedBuf, BufResult, Capabilities, Context, DirectAlignment, DiskIo, Error, FileId, Op,
    OpenOptions, Result, StatsSnapshot, SyncKind,
};

/// Which operations count towards the Nth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// `write_at` and `writev_at` (and the write half of `write_sync_at`).
    Write,
    /// `fsync` of either kind (and the sync half of `write_sync_at`), and `sync_dir`.
    Sync,
    /// Writes, syncs, `preallocate`, `set_len`, `create_dir_all`, `remove_file` and `rename`: every
    /// operation that changes a file or a directory.
    Any,
    /// Opens that ask for `O_DIRECT` (with `EINVAL`: a filesystem that refuses direct I/O, such
    /// as tmpfs before Linux 6.6). Not counted by [`Any`](Self::Any).
    DirectOpen,
    /// `preallocate` alone (with `EOPNOTSUPP`: a filesystem that cannot preallocate, such as
    /// many FUSE filesystems). Also counted by [`Any`](Self::Any).
    Preallocate,
}

/// Whether the fault fires once or sticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Only the Nth matching operation fails.
    Once,
    /// The Nth matching operation and every later one fail (a dead disk).
    FromThenOn,
}

/// When and how to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// Which operations are counted.
    pub target: FaultTarget,
    /// The 1-based number of the first matching operation to fail.
    pub nth: u64,
    /// Once, or from then on.
    pub mode: FaultMode,
    /// The error number the failed operation reports (`EIO` by default; `ENOSPC` for a full disk).
    pub errno: i32,
}

impl FaultPlan {
    /// Fail the `nth` matching operation once with `EIO`.
    pub fn new(target: FaultTarget, nth: u64) -> Self {
        Self {
            target,
            nth,
            mode: FaultMode::Once,
            errno: libc::EIO,
        }
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: FaultMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the error number.
    pub fn errno(mut self, errno: i32) -> Self {
        self.errno = errno;
        self
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write,
    Sync,
    Meta,
    Preallocate,
    DirectOpen,
}

/// Wraps a backend and fails operations as a [`FaultPlan`] says. A failed operation never
/// reaches the wrapped backend: the file is left as it was, and the buffers come back intact.
///
/// ```
/// use conformance::{FailingDisk, FaultPlan, FaultTarget};
/// use diskio::{DiskIo, OpenOptions, SyncKind};
///
/// # let dir = conformance::harness::ScratchDir::new("failing-doc");
/// let inner = diskio_blocking::BlockingDisk::with_defaults()?;
/// let disk = FailingDisk::new(inner, FaultPlan::new(FaultTarget::Sync, 2));
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// rt.block_on(async {
///     let f = disk.open(&dir.path().join("f"), &OpenOptions::read_write_create()).await?;
///     disk.fsync(f, SyncKind::Data).await?; // first sync: fine
///     let err = disk.fsync(f, SyncKind::Data).await.unwrap_err(); // second: EIO
///     assert_eq!(err.raw_os_error(), Some(libc::EIO));
///     disk.fsync(f, SyncKind::Data).await // once only: the third is fine
/// })?;
/// # Ok::<(), diskio::Error>(())
/// ```
pub struct FailingDisk<D> {
    inner: D,
    plan: Mutex<Option<FaultPlan>>,
    matched: AtomicU64,
    injected: AtomicU64,
    /// Which files write late, and how late.
    slow: Mutex<Slow>,
}

/// What [`FailingDisk::slow_writes`] set: the rule for files opened from then on, and the open
/// files it caught with their delay.
#[derive(Default)]
struct Slow {
    rule: Option<(String, Duration)>,
    files: HashMap<FileId, Duration>,
}

impl<D: DiskIo> FailingDisk<D> {
    /// Wraps `inner` with `plan` armed.
    pub fn new(inner: D, plan: FaultPlan) -> Self {
        let disk = Self::passthrough(inner);
        disk.arm(plan);
        disk
    }

    /// Wraps `inner` with no fault armed.
    pub fn passthrough(inner: D) -> Self {
        Self {
            inner,
            plan: Mutex::new(None),
            matched: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            slow: Mutex::new(Slow::default()),
        }
    }

    /// Makes every write (`write_at`, `writev_at`, and so the write half of `write_sync_at`) to
    /// a file opened from now on whose name starts with `prefix` wait `delay` first: a slow
    /// disk under that file, to see what waits for it.
    pub fn slow_writes(&self, prefix: &str, delay: Duration) {
        self.slow().rule = Some((prefix.to_owned(), delay));
    }

    fn slow(&self) -> std::sync::MutexGuard<'_, Slow> {
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits as [`slow_writes`](Self::slow_writes) says before a write to `file`.
    async fn pace(&self, file: FileId) {
        let delay = self.slow().files.get(&file).copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    /// Arms `plan`, restarting the count of matching operations.
    pub fn arm(&self, plan: FaultPlan) {
        let mut guard = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        self.matched.store(0, Ordering::SeqCst);
        *guard = Some(plan);
    }

    /// Stops injecting faults.
    pub fn disarm(&self) {
        *self.plan.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Matching operations seen since the plan was armed (failed ones included).
    pub fn matched(&self) -> u64 {
        self.matched.load(Ordering::SeqCst)
    }

    /// Operations failed so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> D {
        self.inner
    }

    /// This disk's admission step: the request refused with the injected error, the buffers
    /// handed back (the wrapped backend admits what passes, as every backend does).
    fn admit<B: OpBufs>(
        &self,
        kind: Kind,
        req: Request,
        bufs: B,
    ) -> std::result::Result<B, Refused<B>> {
        match self.fault(kind, || req.context(&bufs)) {
            Some(e) => Err((e, bufs)),
            None => Ok(bufs),
        }
    }

    /// [`admit`](Self::admit) for an operation without buffers.
    fn admit_plain(&self, kind: Kind, req: Request) -> Result<()> {
        self.admit(kind, req, ()).map_err(|(e, ())| e)
    }

    /// The error to inject for this operation, if any.
    fn fault(&self, kind: Kind, ctx: impl FnOnce() -> Context) -> Option<Error> {
        let guard = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        let plan = (*guard)?;
        let counts = match plan.target {
            FaultTarget::Write => kind == Kind::Write,
            FaultTarget::Sync => kind == Kind::Sync,
            FaultTarget::Any => kind != Kind::DirectOpen,
            FaultTarget::DirectOpen => kind == Kind::DirectOpen,
            FaultTarget::Preallocate => kind == Kind::Preallocate,
        };
        if !counts {
            return None;
        }
        let n = self.matched.fetch_add(1, Ordering::SeqCst) + 1;
        let fire = match plan.mode {
            FaultMode::Once => n == plan.nth,
            FaultMode::FromThenOn => n >= plan.nth,
        };
        if !fire {
            return None;
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        Some(Error::from_errno(ctx(), plan.errno))
    }
}

impl<D: DiskIo> DiskIo for FailingDisk<D> {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn alignment(&self) -> usize {
        self.inner.alignment()
    }
    fn capabilities(&self) -> Capabilities {
        // The write-then-sync runs as two counted steps here, never as one operation.
        let mut caps = self.inner.capabilities();
        caps.linked_write_sync = false;
        caps.dsync_write = false;
        caps
    }
    fn alloc(&self, len: usize) -> Result<AlignedBuf> {
        self.inner.alloc(len)
    }
    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        if options.is_direct() {
            if let Some(e) = self.fault(Kind::DirectOpen, || Context::new(Op::Open).path(path)) {
                return Err(e);
            }
        }
        let file = self.inner.open(path, options).await?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let mut slow = self.slow();
        if let Some((prefix, delay)) = &slow.rule {
            if name.starts_with(prefix.as_str()) {
                let delay = *delay;
                slow.files.insert(file, delay);
            }
        }
        Ok(file)
    }
    async fn close(&self, file: FileId) -> Result<()> {
        self.slow().files.remove(&file);
        self.inner.close(file).await
    }
    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        self.inner.read_at(file, buf, offset).await
    }
    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        match self.admit(Kind::Write, Request::at(Op::Write, file, offset), buf) {
            Ok(buf) => {
                self.pace(file).await;
                self.inner.write_at(file, buf, offset).await
            }
            Err((e, buf)) => (Err(e), buf),
        }
    }
    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        match self.admit(Kind::Write, Request::at(Op::Writev, file, offset), bufs) {
            Ok(bufs) => {
                self.pace(file).await;
                self.inner.writev_at(file, bufs, offset).await
            }
            Err((e, bufs)) => (Err(e), bufs),
        }
    }
    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        self.admit_plain(Kind::Sync, Request::new(Op::Sync, file))?;
        self.inner.fsync(file, kind).await
    }
    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        let req = Request::at(Op::Preallocate, file, offset).len(len);
        self.admit_plain(Kind::Preallocate, req)?;
        self.inner.preallocate(file, offset, len).await
    }
    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        self.admit_plain(Kind::Meta, Request::new(Op::SetLen, file).len(len))?;
        self.inner.set_len(file, len).await
    }
    async fn file_len(&self, file: FileId) -> Result<u64> {
        self.inner.file_len(file).await
    }
    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>> {
        self.inner.direct_alignment(file)
    }
    fn stats(&self) -> StatsSnapshot {
        self.inner.stats()
    }
    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        self.inner.list_dir(dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> Result<()> {
        if let Some(e) = self.fault(Kind::Meta, || Context::new(Op::Dir).path(dir)) {
            return Err(e);
        }
        self.inner.create_dir_all(dir).await
    }
    async fn remove_file(&self, path: &Path) -> Result<()> {
        if let Some(e) = self.fault(Kind::Meta, || Context::new(Op::Dir).path(path)) {
            return Err(e);
        }
        self.inner.remove_file(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        if let Some(e) = self.fault(Kind::Meta, || Context::new(Op::Dir).path(from)) {
            return Err(e);
        }
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        if let Some(e) = self.fault(Kind::Sync, || Context::new(Op::Dir).path(dir)) {
            return Err(e);
        }
        self.inner.sync_dir(dir).await
    }
}
