//! The trait's operations as jobs for the executors.

use std::path::Path;
use std::sync::Arc;

use diskio::backend::{
    Admitted, FileAccess, IOV_MAX, Linked, OpTimer, Request, finish_linked, start_open,
    write_then_sync,
};
use diskio::{
    AlignedBuf, BufResult, Capabilities, Context, DirectAlignment, DiskIo, Error, FileId, Op,
    OpenOptions, Result, StatsSnapshot, SyncKind,
};

use crate::UringDisk;
use crate::calls::gone;
use crate::executor::{Job, Reply, WriteSync};
use crate::files::OpenFile;

impl UringDisk {
    /// `read_at` (`op` is [`Op::Read`]) or `write_at` (`op` is [`Op::Write`]).
    async fn read_or_write(
        &self,
        op: Op,
        file: FileId,
        buf: AlignedBuf,
        offset: u64,
    ) -> BufResult<usize> {
        let req = Request::at(op, file, offset);
        let (admitted, buf) =
            diskio::admitted!(self.inner.files.admit(&self.inner.stats, req, buf));
        let key = admitted.file.key;
        let job = |reply| {
            if op == Op::Read {
                Job::Read {
                    key,
                    buf,
                    offset,
                    reply,
                }
            } else {
                Job::Write {
                    key,
                    buf,
                    offset,
                    reply,
                }
            }
        };
        self.call_buf(&admitted.ctx, &admitted.file, admitted.timer, job)
            .await
    }

    /// Runs a job without buffers on the file's executor, for an admitted operation, its
    /// clock travelling with the job; finishes the clock.
    async fn call_plain<T>(
        &self,
        ctx: &Context,
        file: &OpenFile,
        timer: OpTimer,
        job: impl FnOnce(Reply<std::io::Result<T>>) -> Job,
    ) -> Result<T> {
        let (res, clocks) = match self
            .call(ctx, file.executor, [Some(timer), None], job)
            .await
        {
            Ok((Ok(out), clocks)) => (Ok(out), clocks),
            Ok((Err(e), clocks)) => (Err(file.err(ctx.clone(), e)), clocks),
            // The clock went with the job: dropped unfinished, it counts an error.
            Err(e) => (Err(e), [None, None]),
        };
        if let [Some(timer), _] = clocks {
            timer.finish(&res, |_| 0);
        }
        res
    }
}

impl DiskIo for UringDisk {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn alignment(&self) -> usize {
        self.inner.alignment
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.direct_io = true;
        caps
    }

    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        let (path, ctx, timer) = start_open(&self.inner.stats, path);
        let executor = self.pick_executor();
        let res = match options.open_flags() {
            Err(e) => Err(Error::io(ctx.clone(), e)),
            Ok(_) => {
                let job = |reply| Job::Open {
                    path: Arc::clone(&path),
                    options: *options,
                    reply,
                };
                // The open's clock stays here: an open whose caller left is closed again, and
                // counted as failed.
                match self.call(&ctx, executor, [None, None], job).await {
                    Ok((Ok(opened), _)) => Ok(OpenFile {
                        executor,
                        key: opened.key,
                        std: opened.std,
                        access: FileAccess::new(Arc::clone(&path), options, opened.direct),
                    }),
                    Ok((Err(e), _)) => Err(Error::io(ctx, e)),
                    Err(e) => Err(e),
                }
            }
        };
        self.inner.files.insert_opened(timer, res)
    }

    async fn close(&self, file: FileId) -> Result<()> {
        let ctx = Context::new(Op::Close).file(file);
        let timer = self.inner.stats.start(Op::Close);
        let res = async {
            let f = self.inner.files.get(file, || ctx.clone())?;
            // Room in the queue first, so the file is forgotten on both sides or on neither.
            let permit = self
                .queue(&f)
                .reserve()
                .await
                .map_err(|_| gone(ctx.clone()))?;
            self.inner.files.remove(file, || ctx.clone())?;
            permit.send(Job::Close { key: f.key });
            Ok(())
        }
        .await;
        timer.finish(&res, |_| 0);
        res
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
        let (reply, answer) = Reply::new([Some(op.timer), None]);
        let job = Job::Writev {
            key: op.file.key,
            bufs,
            offset,
            reply,
        };
        let (res, bufs, clocks) = match self.exchange(op.file.executor, job, answer).await {
            Ok(((Ok(n), bufs), clocks)) => (Ok(n), bufs, clocks),
            Ok(((Err(e), bufs), clocks)) => (Err(op.file.err(op.ctx, e)), bufs, clocks),
            // The clock went with the job: dropped unfinished, it counts an error.
            Err(job) => (
                Err(gone(op.ctx)),
                job.map(Job::into_bufs).unwrap_or_default(),
                [None, None],
            ),
        };
        if let [Some(timer), _] = clocks {
            timer.finish(&res, |&n| n as u64);
        }
        (res, bufs)
    }

    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        let req = Request::new(Op::Sync, file);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        // A full sync can take tens of ms after a large write of new blocks: never on a
        // runtime worker (see `UringOptions::lone_sync_here`).
        let alone = self.lone_here(&op.file).filter(|_| kind == SyncKind::Data);
        if let Some(_alone) = alone {
            let res =
                diskio::backend::sync_file(&op.file.std, kind).map_err(|e| op.file.err(op.ctx, e));
            op.timer.finish(&res, |_| 0);
            return res;
        }
        let key = op.file.key;
        self.call_plain(&op.ctx, &op.file, op.timer, |reply| Job::Sync {
            key,
            kind,
            reply,
        })
        .await
    }

    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        let req = Request::at(Op::Preallocate, file, offset).len(len);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        if len == 0 {
            // fallocate(2) refuses a zero length; the contract makes it a no-op.
            op.timer.ok(0);
            return Ok(());
        }
        let key = op.file.key;
        let job = |reply| Job::Fallocate {
            key,
            offset,
            len,
            reply,
        };
        self.call_plain(&op.ctx, &op.file, op.timer, job).await
    }

    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        let req = Request::new(Op::SetLen, file).len(len);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        let job = |reply| Job::SetLen {
            file: Arc::clone(&op.file),
            len,
            reply,
        };
        self.call_plain(&op.ctx, &op.file, op.timer, job).await
    }

    async fn file_len(&self, file: FileId) -> Result<u64> {
        // `fstat` does not wait for the device: it runs here, with no hand-off.
        let (files, stats) = (&self.inner.files, &self.inner.stats);
        files.file_len_counted(stats, file, |f| &f.std)
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
        if let Some(_alone) = self.lone_here(&op.file) {
            let sync_timer = op.timer.sibling(Op::Sync);
            return write_sync_here(op, (file, bufs, offset, kind), sync_timer);
        }
        if bufs.is_empty() || bufs.len() > IOV_MAX {
            // Nothing to write, or more than one WRITEV: the write, then the sync, each counted.
            op.timer.discard();
            return write_then_sync(self, file, bufs, offset, kind).await;
        }
        let sync_timer = op.timer.sibling(Op::Sync);
        let (reply, answer) = Reply::new([Some(op.timer), Some(sync_timer)]);
        let job = Job::WriteSync {
            key: op.file.key,
            bufs,
            offset,
            kind,
            reply,
        };
        let ((done, bufs), clocks) = match self.exchange(op.file.executor, job, answer).await {
            Ok(answer) => answer,
            // The clocks went with the job: dropped unfinished, they count errors.
            Err(job) => {
                let bufs = job.map(Job::into_bufs).unwrap_or_default();
                return (Err(gone(op.ctx)), bufs);
            }
        };
        let [Some(write_timer), Some(sync_timer)] = clocks else {
            // Both were sent; the reply hands back what it was given.
            return (Err(gone(op.ctx)), bufs);
        };
        let outcome = match done {
            WriteSync::Synced => Linked::Synced,
            WriteSync::Short(n) => Linked::Short(n),
            WriteSync::WriteFailed(e) => Linked::WriteFailed(op.file.err(op.ctx, e)),
            WriteSync::SyncFailed(e) => {
                let sync_ctx = Context::new(Op::Sync).file(file);
                Linked::SyncFailed(op.file.err(sync_ctx, e))
            }
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

/// `write_sync_at` on the caller's thread: every buffer written in order (`pwrite`, resumed
/// after a short write), then the sync; success only once the sync returned.
fn write_sync_here(
    op: Admitted<Arc<OpenFile>>,
    (id, bufs, offset, kind): (FileId, Vec<AlignedBuf>, u64, SyncKind),
    sync_timer: OpTimer,
) -> BufResult<usize, Vec<AlignedBuf>> {
    use std::os::unix::fs::FileExt;
    let f = &op.file;
    let mut at = offset;
    for b in &bufs {
        if let Err(e) = f.std.write_all_at(b, at) {
            op.timer.err();
            sync_timer.err();
            return (Err(f.err(op.ctx, e)), bufs);
        }
        at += b.len() as u64;
    }
    let total = (at - offset) as usize;
    op.timer.ok(total as u64);
    match diskio::backend::sync_file(&f.std, kind) {
        Ok(()) => {
            sync_timer.ok(0);
            (Ok(total), bufs)
        }
        Err(e) => {
            sync_timer.err();
            (Err(f.err(Context::new(Op::Sync).file(id), e)), bufs)
        }
    }
}
