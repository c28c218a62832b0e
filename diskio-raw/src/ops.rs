//! The trait's operations as ring submissions.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use diskio::backend::{
    Admitted, FileAccess, IOV_MAX, Linked, OpTimer, RW_MAX, Request, direct_alignment,
    finish_linked, start_open, write_then_sync,
};
use diskio::{
    AlignedBuf, BufResult, Capabilities, Context, DirectAlignment, DiskIo, Error, FileId, Op,
    OpenOptions, Result, StatsSnapshot, SyncKind,
};
use io_uring::{opcode, squeue, types};

use crate::RawDisk;
use crate::files::OpenFile;
use crate::ring::{Done, IoVecs, Keep, Lone, Timed, Timers};

/// Builds an SQE on the file's registered slot when it has one, else on its descriptor.
macro_rules! on_file {
    ($file:expr, |$t:ident| $build:expr) => {
        match $file.slot {
            Some(slot) => {
                let $t = types::Fixed(slot);
                $build
            }
            None => {
                let $t = types::Fd($file.raw_fd());
                $build
            }
        }
    };
}

impl Keep {
    fn into_buf(self) -> AlignedBuf {
        match self {
            Keep::Buf(buf, _) => buf,
            _ => AlignedBuf::empty(),
        }
    }

    fn into_bufs(self) -> Vec<AlignedBuf> {
        match self {
            Keep::Bufs { bufs, .. } => bufs,
            _ => Vec::new(),
        }
    }
}

impl RawDisk {
    fn fixed_index(&self, buf: &AlignedBuf) -> Option<u16> {
        let pool = self.inner.fixed.as_ref()?;
        pool.pinned_index(buf).and_then(|i| u16::try_from(i).ok())
    }

    /// `read_at` (`op` is [`Op::Read`]) or `write_at` (`op` is [`Op::Write`]): one SQE on the
    /// buffer, `READ_FIXED`/`WRITE_FIXED` when it is one of the registered buffers.
    async fn read_or_write(
        &self,
        op: Op,
        file: FileId,
        buf: AlignedBuf,
        offset: u64,
    ) -> BufResult<usize> {
        let req = Request::at(op, file, offset);
        let (admitted, mut buf) =
            diskio::admitted!(self.inner.files.admit(&self.inner.stats, req, buf));
        let (f, ctx, timer) = (admitted.file, admitted.ctx, admitted.timer);
        let len = buf.len().min(RW_MAX) as u32;
        let read = op == Op::Read;
        let ptr = buf.as_mut_ptr();
        let sqe = match (self.fixed_index(&buf), read) {
            (Some(index), true) => on_file!(f, |t| opcode::ReadFixed::new(t, ptr, len, index)
                .offset(offset)
                .build()),
            (Some(index), false) => on_file!(f, |t| opcode::WriteFixed::new(t, ptr, len, index)
                .offset(offset)
                .build()),
            (None, true) => on_file!(f, |t| opcode::Read::new(t, ptr, len).offset(offset).build()),
            (None, false) => on_file!(f, |t| opcode::Write::new(t, ptr, len)
                .offset(offset)
                .build()),
        };
        let mut sqes = [sqe];
        let timers = [Some(Timed::bytes(timer, 0)), None];
        // SAFETY: the SQE points at `len <= buf.len()` bytes of `buf`, which the slot keeps
        // until the completion (a write only reads them); a fixed index is one of the
        // registered pinned buffers and `buf` lies within it; the file slot belongs to the kept
        // file.
        let out = unsafe {
            self.inner
                .ring
                .run(&mut sqes, Keep::Buf(buf, f), timers, Lone::Spin)
        }
        .await;
        let (res, buf, timers) = match out {
            Ok(Done {
                results,
                keep,
                timers,
            }) => {
                let Keep::Buf(mut buf, f) = keep else {
                    return (Err(Error::Shutdown { ctx }), AlignedBuf::empty());
                };
                let res = results[0];
                if res < 0 {
                    (Err(f.errno(ctx, -res)), buf, timers)
                } else {
                    if read {
                        buf.truncate(res as usize);
                    }
                    (Ok(res as usize), buf, timers)
                }
            }
            Err((e, keep, timers)) => (Err(shutdown_or_io(ctx, e)), keep.into_buf(), timers),
        };
        if let [Some(timed), _] = timers {
            timed.into_timer().finish(&res, |&n| n as u64);
        }
        (res, buf)
    }

    /// Runs an operation that keeps only its file and moves no bytes, and finishes its timer;
    /// returns the result of its one SQE.
    async fn run_plain(
        &self,
        ctx: &Context,
        file: Arc<OpenFile>,
        sqe: squeue::Entry,
        timer: OpTimer,
    ) -> Result<i32> {
        let mut sqes = [sqe];
        let timers = [Some(Timed::plain(timer, 0)), None];
        // SAFETY: the entry references no memory, and its fixed-file slot (if any) belongs to
        // `file`, which the operation keeps until it completes.
        let out = unsafe {
            self.inner
                .ring
                .run(&mut sqes, Keep::File(file), timers, Lone::Sleep)
        }
        .await;
        let (res, timers) = match out {
            Ok(Done {
                results,
                keep,
                timers,
            }) => {
                let res = results[0];
                let res = if res >= 0 {
                    Ok(res)
                } else if let Keep::File(file) = &keep {
                    Err(file.errno(ctx.clone(), -res))
                } else {
                    Err(Error::from_errno(ctx.clone(), -res))
                };
                (res, timers)
            }
            Err((e, _, timers)) => (Err(shutdown_or_io(ctx.clone(), e)), timers),
        };
        if let [Some(timed), _] = timers {
            timed.into_timer().finish(&res, |_| 0);
        }
        res
    }

    /// The vectored write, made durable as `durable` says. Returns the bytes written, and for a
    /// linked chain the sync's result.
    async fn writev_chain(
        &self,
        file: Arc<OpenFile>,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        durable: Durable,
        timers: Timers,
    ) -> (
        std::result::Result<(i32, i32), std::io::Error>,
        Vec<AlignedBuf>,
        Timers,
    ) {
        let iovecs = IoVecs(
            bufs.iter()
                .take(IOV_MAX)
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr().cast_mut().cast(),
                    iov_len: b.len(),
                })
                .collect(),
        );
        let count = iovecs.0.len() as u32;
        let rw_flags = match durable {
            Durable::Dsync(SyncKind::Data) => libc::RWF_DSYNC,
            Durable::Dsync(SyncKind::All) => libc::RWF_SYNC,
            Durable::No | Durable::Linked(_) => 0,
        };
        let write = on_file!(file, |t| opcode::Writev::new(t, iovecs.0.as_ptr(), count)
            .offset(offset)
            .rw_flags(rw_flags)
            .build());
        let mut chain = Vec::with_capacity(2);
        match durable {
            Durable::Linked(kind) => {
                chain.push(write.flags(squeue::Flags::IO_LINK));
                chain.push(fsync_sqe(&file, kind));
            }
            Durable::No | Durable::Dsync(_) => chain.push(write),
        }
        // A durable write waits for the device's flush: its caller sleeps in the kernel at
        // once rather than polling (measured: polling a RWF_DSYNC write cost 10-25 % of the
        // IOPS and three times the CPU, see the crate docs).
        let lone = match durable {
            Durable::No => Lone::Spin,
            Durable::Dsync(_) | Durable::Linked(_) => Lone::Sleep,
        };
        let keep = Keep::Bufs {
            bufs,
            _iovecs: iovecs,
            _file: file,
        };
        // SAFETY: the iovecs point into `bufs` and are themselves kept (heap memory that does not
        // move when the vectors move into the slot); the file slot belongs to the kept file.
        let out = unsafe { self.inner.ring.run(&mut chain, keep, timers, lone) }.await;
        match out {
            Ok(Done {
                results,
                keep,
                timers,
            }) => (Ok((results[0], results[1])), keep.into_bufs(), timers),
            Err((e, keep, timers)) => (Err(e), keep.into_bufs(), timers),
        }
    }
}

impl RawDisk {
    /// `write_sync_at` as one `WRITEV` with `RWF_DSYNC` (`RWF_SYNC` for [`SyncKind::All`]).
    /// The kernel syncs the written range before the write completes; on an `O_DIRECT` file over
    /// written blocks that is a FUA write issued inline, with no worker thread at all.
    async fn write_dsync(
        &self,
        op: Admitted<Arc<OpenFile>>,
        (id, bufs, offset, kind): (FileId, Vec<AlignedBuf>, u64, SyncKind),
        sync_timer: OpTimer,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        let total = op.ctx.len.unwrap_or(0);
        let file = Arc::clone(&op.file);
        let timers = [Some(Timed::bytes(op.timer, 0)), None];
        let durable = Durable::Dsync(kind);
        let (out, bufs, timers) = self.writev_chain(file, bufs, offset, durable, timers).await;
        let [Some(write_timer), None] = timers else {
            // One was given; the slot hands back what it was given.
            return (Err(Error::Shutdown { ctx: op.ctx }), bufs);
        };
        let ctx = op.ctx;
        let outcome = match out {
            Err(e) => Linked::WriteFailed(shutdown_or_io(ctx, e)),
            // The write or the sync it carries failed (the errno tells which, the context names
            // the write): either way nothing is known durable.
            Ok((res, _)) if res < 0 => Linked::WriteFailed(op.file.errno(ctx, -res)),
            // A short write synced what it wrote; the rest is written and synced again.
            Ok((written, _)) if written as u64 != total => Linked::Short(written as usize),
            Ok(_) => Linked::Synced,
        };
        let timers = (write_timer.into_timer(), sync_timer);
        finish_linked(self, outcome, timers, (id, bufs, offset, kind)).await
    }
}

impl RawDisk {
    /// A durable operation may run right here, on the caller's thread
    /// ([`RawOptions::lone_sync_here`](crate::RawOptions::lone_sync_here)): it is on, this thread
    /// may block (a worker of a multi-thread Tokio runtime) and nothing else is in flight. The
    /// returned permit counts the caller in flight meanwhile.
    fn lone_here(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let may_block = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !self.inner.lone_sync_here || !may_block {
            return None;
        }
        self.inner.ring.alone()
    }
}

/// `write_sync_at` on the caller's thread: one `pwritev2` with `RWF_DSYNC` (`RWF_SYNC` for
/// [`SyncKind::All`]), which the kernel makes durable before it returns.
fn write_sync_here(
    op: Admitted<Arc<OpenFile>>,
    bufs: Vec<AlignedBuf>,
    offset: u64,
    kind: SyncKind,
    sync_timer: OpTimer,
) -> BufResult<usize, Vec<AlignedBuf>> {
    let total = op.ctx.len.unwrap_or(0);
    let out = diskio::backend::write_all_durable(&op.file.file, &bufs, offset, kind)
        .map(|()| total as usize)
        .map_err(|e| op.file.err(op.ctx, e));
    op.timer.finish_with_sync(sync_timer, &out, |&n| n as u64);
    (out, bufs)
}

/// How [`RawDisk::writev_chain`] makes its write durable.
#[derive(Debug, Clone, Copy)]
enum Durable {
    /// It does not: a plain write.
    No,
    /// One `WRITEV` with `RWF_DSYNC` (or `RWF_SYNC` for [`SyncKind::All`]): the kernel syncs
    /// the written range before it completes.
    Dsync(SyncKind),
    /// `WRITEV` linked to an `FSYNC`.
    Linked(SyncKind),
}

fn fsync_sqe(file: &OpenFile, kind: SyncKind) -> squeue::Entry {
    let flags = match kind {
        SyncKind::Data => types::FsyncFlags::DATASYNC,
        SyncKind::All => types::FsyncFlags::empty(),
    };
    on_file!(file, |t| opcode::Fsync::new(t).flags(flags).build())
}

fn shutdown_or_io(ctx: Context, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::Shutdown { ctx }
    } else {
        Error::io(ctx, e)
    }
}

impl DiskIo for RawDisk {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn alignment(&self) -> usize {
        self.inner.alignment
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.linked_write_sync = self.inner.linked_sync;
        caps.dsync_write = !self.inner.linked_sync;
        caps.fixed_buffers = self.inner.fixed.is_some();
        caps.registered_files = self.inner.setup.registered_files > 0;
        caps.direct_io = true;
        caps
    }

    fn alloc(&self, len: usize) -> Result<AlignedBuf> {
        self.alloc_buf(len)
    }

    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        let (path, ctx, timer) = start_open(&self.inner.stats, path);
        let res = self.open_inner(&path, options, &ctx).await;
        self.inner.files.insert_opened(timer, res)
    }

    async fn close(&self, file: FileId) -> Result<()> {
        self.inner
            .files
            .close_counted(&self.inner.stats, file)
            .map(drop)
    }

    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        self.read_or_write(Op::Read, file, buf, offset).await
    }

    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        self.read_or_write(Op::Write, file, buf, offset).await
    }

    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        let req = Request::at(Op::Writev, file, offset);
        let (op, bufs) = diskio::admitted!(self.inner.files.admit(&self.inner.stats, req, bufs));
        if bufs.is_empty() {
            op.timer.ok(0);
            return (Ok(0), bufs);
        }
        let timers = [Some(Timed::bytes(op.timer, 0)), None];
        let (out, bufs, timers) = self
            .writev_chain(Arc::clone(&op.file), bufs, offset, Durable::No, timers)
            .await;
        let res = match out {
            Ok((n, _)) if n >= 0 => Ok(n as usize),
            Ok((n, _)) => Err(op.file.errno(op.ctx, -n)),
            Err(e) => Err(shutdown_or_io(op.ctx, e)),
        };
        if let [Some(timed), _] = timers {
            timed.into_timer().finish(&res, |&n| n as u64);
        }
        (res, bufs)
    }

    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        let req = Request::new(Op::Sync, file);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        if let Some(_alone) = self.lone_here().filter(|_| kind == SyncKind::Data) {
            let res =
                diskio::backend::sync_file(&op.file.file, kind).map_err(|e| op.file.err(op.ctx, e));
            op.timer.finish(&res, |_| 0);
            return res;
        }
        let sqe = fsync_sqe(&op.file, kind);
        self.run_plain(&op.ctx, op.file, sqe, op.timer)
            .await
            .map(drop)
    }

    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        let req = Request::at(Op::Preallocate, file, offset).len(len);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        if len == 0 {
            // fallocate(2) refuses a zero length; the contract makes it a no-op.
            op.timer.ok(0);
            return Ok(());
        }
        let sqe = on_file!(op.file, |t| opcode::Fallocate::new(t, len)
            .offset(offset)
            .build());
        self.run_plain(&op.ctx, op.file, sqe, op.timer)
            .await
            .map(drop)
    }

    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        let req = Request::new(Op::SetLen, file).len(len);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        if self.inner.setup.ftruncate_op {
            let sqe = on_file!(op.file, |t| opcode::Ftruncate::new(t, len).build());
            return self
                .run_plain(&op.ctx, op.file, sqe, op.timer)
                .await
                .map(drop);
        }
        // No FTRUNCATE opcode (Linux < 6.9): the system call, on this thread.
        let res = op
            .file
            .file
            .set_len(len)
            .map_err(|e| op.file.err(op.ctx, e));
        op.timer.finish(&res, |_| 0);
        res
    }

    async fn file_len(&self, file: FileId) -> Result<u64> {
        // `fstat` does not wait for the device: it runs here, with no hand-off.
        let (files, stats) = (&self.inner.files, &self.inner.stats);
        files.file_len_counted(stats, file, |f| &f.file)
    }

    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>> {
        self.inner.files.direct_alignment(file)
    }

    fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    async fn write_sync_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        kind: SyncKind,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        let req = Request::at(Op::Writev, file, offset);
        let (op, bufs) = diskio::admitted!(self.inner.files.admit(&self.inner.stats, req, bufs));
        // Admission already summed the buffers into the context's length.
        let total = op.ctx.len.unwrap_or(0);
        if bufs.len() > IOV_MAX || total > RW_MAX as u64 {
            // More than one WRITEV would be needed: the write, then the sync, each counted.
            op.timer.discard();
            return write_then_sync(self, file, bufs, offset, kind).await;
        }
        let sync_timer = op.timer.sibling(Op::Sync);
        if !self.inner.linked_sync {
            if let Some(_alone) = self.lone_here() {
                return write_sync_here(op, bufs, offset, kind, sync_timer);
            }
            let args = (file, bufs, offset, kind);
            return self.write_dsync(op, args, sync_timer).await;
        }
        let f = Arc::clone(&op.file);
        let timers = [
            Some(Timed::bytes(op.timer, 0)),
            Some(Timed::plain(sync_timer, 1)),
        ];
        let durable = Durable::Linked(kind);
        let (out, bufs, timers) = self.writev_chain(f, bufs, offset, durable, timers).await;
        let [Some(write_timer), Some(sync_timer)] = timers else {
            // Both were given; the slot hands back what it was given.
            return (Err(Error::Shutdown { ctx: op.ctx }), bufs);
        };
        let (write_timer, sync_timer) = (write_timer.into_timer(), sync_timer.into_timer());
        let outcome = match out {
            Err(e) => Linked::WriteFailed(shutdown_or_io(op.ctx, e)),
            // The write failed; the kernel cancelled the sync. Report the write's error.
            Ok((written, _)) if written < 0 => Linked::WriteFailed(op.file.errno(op.ctx, -written)),
            Ok((written, _)) if written as u64 != total => Linked::Short(written as usize),
            Ok((_, synced)) if synced == -libc::ECANCELED => Linked::SyncCancelled,
            Ok((_, synced)) if synced < 0 => {
                let sync_ctx = Context::new(Op::Sync).file(file);
                Linked::SyncFailed(op.file.errno(sync_ctx, -synced))
            }
            Ok(_) => Linked::Synced,
        };
        finish_linked(
            self,
            outcome,
            (write_timer, sync_timer),
            (file, bufs, offset, kind),
        )
        .await
    }
}

impl RawDisk {
    async fn open_inner(
        &self,
        path: &Arc<Path>,
        options: &OpenOptions,
        ctx: &Context,
    ) -> Result<OpenFile> {
        let flags = options
            .open_flags()
            .map_err(|e| Error::io(ctx.clone(), e))?;
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidInput {
            ctx: ctx.clone(),
            reason: "the path contains a NUL byte".to_owned(),
        })?;
        let sqe = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), cpath.as_ptr())
            .flags(flags)
            .mode(options.mode_bits())
            .build();
        let mut sqes = [sqe];
        // SAFETY: the SQE points at the path's bytes, which the slot keeps (`Keep::Path`) until
        // the completion; a descriptor opened after its caller left is closed by the slot.
        let out = unsafe {
            self.inner.ring.run(
                &mut sqes,
                Keep::Path { _path: cpath },
                [None, None],
                Lone::Sleep,
            )
        }
        .await;
        let fd = match out {
            Ok(Done { results, .. }) if results[0] >= 0 => results[0],
            Ok(Done { results, .. }) => return Err(Error::from_errno(ctx.clone(), -results[0])),
            Err((e, _, _)) => return Err(shutdown_or_io(ctx.clone(), e)),
        };
        // SAFETY: the kernel just opened `fd` for this call; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| Error::io(ctx.clone(), e))?;
        if meta.is_dir() {
            return Err(Error::from_errno(ctx.clone(), libc::EISDIR));
        }
        let direct = if options.is_direct() {
            direct_alignment(&file)
        } else {
            DirectAlignment::NONE
        };
        let slot = self
            .inner
            .slots
            .register(std::os::fd::AsRawFd::as_raw_fd(&file));
        Ok(OpenFile {
            file,
            slot,
            access: FileAccess::new(Arc::clone(path), options, direct),
            registry: Arc::clone(&self.inner.slots),
        })
    }
}
