//! The trait's operations as jobs for the executors.

use std::path::Path;
use std::sync::Arc;

use diskio::backend::{
    FileAccess, IOV_MAX, Linked, Request, finish_linked, start_open, write_then_sync,
};
use diskio::{
    AlignedBuf, BufResult, Capabilities, Context, DirectAlignment, DiskIo, Error, FileId, Op,
    OpenOptions, Result, StatsSnapshot, SyncKind,
};
use tokio::sync::oneshot;

use crate::UringDisk;
use crate::calls::gone;
use crate::executor::{Job, WriteSync};
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
        let (res, buf) = self.call_buf(&admitted.ctx, &admitted.file, job).await;
        admitted.timer.finish(&res, |&n| n as u64);
        (res, buf)
    }

    /// Runs a job without buffers on the file's executor, for an admitted operation.
    async fn call_plain<T>(
        &self,
        ctx: &Context,
        file: &OpenFile,
        job: impl FnOnce(oneshot::Sender<std::io::Result<T>>) -> Job,
    ) -> Result<T> {
        match self.call(ctx, file.executor, job).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(file.err(ctx.clone(), e)),
            Err(e) => Err(e),
        }
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
                match self.call(&ctx, executor, job).await {
                    Ok(Ok(opened)) => Ok(OpenFile {
                        executor,
                        key: opened.key,
                        std: opened.std,
                        access: FileAccess::new(Arc::clone(&path), options, opened.direct),
                    }),
                    Ok(Err(e)) => Err(Error::io(ctx, e)),
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
        let (reply, answer) = oneshot::channel();
        let job = Job::Writev {
            key: op.file.key,
            bufs,
            offset,
            reply,
        };
        let (res, bufs) = match self.exchange(op.file.executor, job, answer).await {
            Ok((Ok(n), bufs)) => (Ok(n), bufs),
            Ok((Err(e), bufs)) => (Err(op.file.err(op.ctx, e)), bufs),
            Err(job) => (
                Err(gone(op.ctx)),
                job.map(Job::into_bufs).unwrap_or_default(),
            ),
        };
        op.timer.finish(&res, |&n| n as u64);
        (res, bufs)
    }

    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        let req = Request::new(Op::Sync, file);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        let key = op.file.key;
        let res = self
            .call_plain(&op.ctx, &op.file, |reply| Job::Sync { key, kind, reply })
            .await;
        op.timer.finish(&res, |_| 0);
        res
    }

    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        let req = Request::at(Op::Preallocate, file, offset).len(len);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        let res = if len == 0 {
            // fallocate(2) refuses a zero length; the contract makes it a no-op.
            Ok(())
        } else {
            let key = op.file.key;
            let job = |reply| Job::Fallocate {
                key,
                offset,
                len,
                reply,
            };
            self.call_plain(&op.ctx, &op.file, job).await
        };
        op.timer.finish(&res, |_| 0);
        res
    }

    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        let req = Request::new(Op::SetLen, file).len(len);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        let job = |reply| Job::SetLen {
            file: Arc::clone(&op.file),
            len,
            reply,
        };
        let res = self.call_plain(&op.ctx, &op.file, job).await;
        op.timer.finish(&res, |_| 0);
        res
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
        if bufs.is_empty() || bufs.len() > IOV_MAX {
            // Nothing to write, or more than one WRITEV: the write, then the sync, each counted.
            op.timer.discard();
            return write_then_sync(self, file, bufs, offset, kind).await;
        }
        let sync_timer = self.inner.stats.start(Op::Sync);
        let (reply, answer) = oneshot::channel();
        let job = Job::WriteSync {
            key: op.file.key,
            bufs,
            offset,
            kind,
            reply,
        };
        let (outcome, bufs) = match self.exchange(op.file.executor, job, answer).await {
            Ok((WriteSync::Synced, bufs)) => (Linked::Synced, bufs),
            Ok((WriteSync::Short(n), bufs)) => (Linked::Short(n), bufs),
            Ok((WriteSync::WriteFailed(e), bufs)) => {
                (Linked::WriteFailed(op.file.err(op.ctx, e)), bufs)
            }
            Ok((WriteSync::SyncFailed(e), bufs)) => {
                let sync_ctx = Context::new(Op::Sync).file(file);
                (Linked::SyncFailed(op.file.err(sync_ctx, e)), bufs)
            }
            Err(job) => {
                let bufs = job.map(Job::into_bufs).unwrap_or_default();
                (Linked::WriteFailed(gone(op.ctx)), bufs)
            }
        };
        finish_linked(
            self,
            outcome,
            (op.timer, sync_timer),
            (file, bufs, offset, kind),
        )
        .await
    }
}
