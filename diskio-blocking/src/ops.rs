//! The trait's operations as jobs for the worker threads.

use std::path::Path;

use diskio::backend::{Request, start_open};
use diskio::{
    AlignedBuf, BufResult, Capabilities, Context, DirectAlignment, DiskIo, Error, FileId, Op,
    OpenOptions, Result, StatsSnapshot, SyncKind,
};

use crate::files::open_file;
use crate::{BlockingDisk, read, sync, write};

impl BlockingDisk {
    /// Runs `job` on a worker, giving `bufs` back on every path.
    async fn submit<T, B>(
        &self,
        ctx: Context,
        bufs: B,
        job: impl FnOnce(B, Context) -> (Result<T>, B) + Send + 'static,
    ) -> (Result<T>, B)
    where
        T: Send + 'static,
        B: Default + Send + 'static,
    {
        self.submit_where(ctx, bufs, false, job).await
    }

    /// As [`submit`](Self::submit); with `here_if_alone`, a job alone in the queue may run on
    /// this thread ([`Slot::run_here_if_alone`](crate::pool::Slot::run_here_if_alone)).
    async fn submit_where<T, B>(
        &self,
        ctx: Context,
        bufs: B,
        here_if_alone: bool,
        job: impl FnOnce(B, Context) -> (Result<T>, B) + Send + 'static,
    ) -> (Result<T>, B)
    where
        T: Send + 'static,
        B: Default + Send + 'static,
    {
        let slot = match self.inner.pool.slot().await {
            Ok(slot) => slot,
            Err(_) => return (Err(Error::Shutdown { ctx }), bufs),
        };
        let shutdown_ctx = ctx.clone();
        let job = move || job(bufs, ctx);
        let out = if here_if_alone {
            slot.run_here_if_alone(job).await
        } else {
            slot.run(job).await
        };
        match out {
            Ok(out) => out,
            // The worker died with the buffers: nothing to give back but an empty value.
            Err(_) => (Err(Error::Shutdown { ctx: shutdown_ctx }), B::default()),
        }
    }

    /// Runs a buffer-less operation on a worker.
    async fn submit_plain<T: Send + 'static>(
        &self,
        ctx: Context,
        job: impl FnOnce(Context) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(ctx, (), move |(), ctx| (job(ctx), ())).await.0
    }
}

impl DiskIo for BlockingDisk {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn alignment(&self) -> usize {
        self.inner.alignment
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.direct_io = true;
        caps.dsync_write = self.inner.dsync_write;
        caps
    }

    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        let (path, ctx, timer) = start_open(&self.inner.stats, path);
        let options = *options;
        let opened = self
            .submit_plain(ctx, move |ctx| open_file(&path, &options, ctx))
            .await;
        self.inner.files.insert_opened(timer, opened)
    }

    async fn close(&self, file: FileId) -> Result<()> {
        self.inner
            .files
            .close_counted(&self.inner.stats, file)
            .map(drop)
    }

    // `read_at` and `write_at` are spelled out rather than shared through a helper taking the
    // system call as a `fn` pointer: that helper measured 1.4 µs slower per read at queue depth 1.
    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        let req = Request::at(Op::Read, file, offset);
        let (op, buf) = diskio::admitted!(self.inner.files.admit(&self.inner.stats, req, buf));
        let (f, timer) = (op.file, op.timer);
        self.submit(op.ctx, buf, move |buf, ctx| {
            let out = read::read_at(&f, buf, offset, ctx);
            timer.finish(&out.0, |&n| n as u64);
            out
        })
        .await
    }

    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        let req = Request::at(Op::Write, file, offset);
        let (op, buf) = diskio::admitted!(self.inner.files.admit(&self.inner.stats, req, buf));
        let (f, timer) = (op.file, op.timer);
        self.submit(op.ctx, buf, move |buf, ctx| {
            let out = write::write_at(&f, buf, offset, ctx);
            timer.finish(&out.0, |&n| n as u64);
            out
        })
        .await
    }

    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        let req = Request::at(Op::Writev, file, offset);
        let (op, bufs) = diskio::admitted!(self.inner.files.admit(&self.inner.stats, req, bufs));
        let (f, timer) = (op.file, op.timer);
        self.submit(op.ctx, bufs, move |bufs, ctx| {
            let out = write::writev_at(&f, bufs, offset, ctx);
            timer.finish(&out.0, |&n| n as u64);
            out
        })
        .await
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
        let (f, timer) = (op.file, op.timer);
        let sync_timer = timer.sibling(Op::Sync);
        let dsync = self.inner.dsync_write;
        self.submit_where(op.ctx, bufs, true, move |bufs, ctx| {
            let out = write::write_sync(&f, (bufs, offset), kind, dsync, ctx);
            timer.finish_with_sync(sync_timer, &out.0, |&n| n as u64);
            out
        })
        .await
    }

    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        let req = Request::new(Op::Sync, file);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        let (f, timer) = (op.file, op.timer);
        let job = move |(), ctx| {
            let res = sync::fsync(&f, kind, ctx);
            timer.finish(&res, |_| 0);
            (res, ())
        };
        // A full sync can take tens of ms after a large write of new blocks: never on a
        // runtime worker (see `BlockingOptions::lone_sync_here`).
        let here_if_alone = kind == SyncKind::Data;
        self.submit_where(op.ctx, (), here_if_alone, job).await.0
    }

    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        let req = Request::at(Op::Preallocate, file, offset).len(len);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        let (f, timer) = (op.file, op.timer);
        self.submit_plain(op.ctx, move |ctx| {
            let res = sync::preallocate(&f, offset, len, ctx);
            timer.finish(&res, |_| 0);
            res
        })
        .await
    }

    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        let req = Request::new(Op::SetLen, file).len(len);
        let op = self.inner.files.admit_plain(&self.inner.stats, req)?;
        let (f, timer) = (op.file, op.timer);
        self.submit_plain(op.ctx, move |ctx| {
            let res = sync::set_len(&f, len, ctx);
            timer.finish(&res, |_| 0);
            res
        })
        .await
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
}
