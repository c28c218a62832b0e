//! The trait's operations as jobs for the executors.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use diskio::{
    Access, AlignedBuf, BufResult, Capabilities, Context, DirectAlignment, DiskIo, Error,
    FileAccess, FileId, Op, OpenOptions, Result, StatsSnapshot, SyncKind, check_range,
};
use tokio::sync::{mpsc, oneshot};

use crate::executor::{Job, WriteSync};
use crate::files::OpenFile;
use crate::{IOV_MAX, UringDisk};

/// The executor is gone (its thread panicked) or dropped the job: never a hang.
fn gone(ctx: Context) -> Error {
    tracing::error!(%ctx, "a diskio-uring executor stopped before answering");
    Error::Shutdown { ctx }
}

fn os(ctx: &Context, file: &OpenFile, e: std::io::Error) -> Error {
    Error::io(ctx.clone().path(file.access.path.clone()), e)
}

impl UringDisk {
    fn prepare(
        &self,
        id: FileId,
        ctx: &Context,
        access: Access,
        offset: u64,
        parts: impl Iterator<Item = (usize, usize)> + Clone,
    ) -> Result<Arc<OpenFile>> {
        let file = self.inner.files.get(id, || ctx.clone())?;
        file.access.check(ctx, access, offset, parts)?;
        Ok(file)
    }

    fn queue(&self, file: &OpenFile) -> &mpsc::Sender<Job> {
        &self.inner.executors[file.executor].jobs
    }

    /// `read_at` (`op` is [`Op::Read`]) or `write_at` (any other).
    async fn read_or_write(
        &self,
        op: Op,
        file: FileId,
        buf: AlignedBuf,
        offset: u64,
    ) -> BufResult<usize> {
        let ctx = Context::new(op)
            .file(file)
            .offset(offset)
            .len(buf.len() as u64);
        let timer = self.inner.stats.start(op);
        let read = op == Op::Read;
        let access = if read { Access::Read } else { Access::Write };
        let part = (buf.as_ptr() as usize, buf.len());
        let f = match self.prepare(file, &ctx, access, offset, std::iter::once(part)) {
            Ok(f) => f,
            Err(e) => {
                timer.err();
                return (Err(e), buf);
            }
        };
        let key = f.key;
        let job = |reply| {
            if read {
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
        let (res, buf) = self.call_buf(&ctx, &f, job).await;
        timer.finish(&res, |&n| n as u64);
        (res, buf)
    }

    /// Sends `job` to `executor` and awaits `answer`. `Err(Some(job))` gives back a job the
    /// executor never took (it is gone); `Err(None)` means it took the job and died.
    ///
    /// A caller alone in flight polls for its answer for up to [`UringOptions::spin`] before
    /// letting its runtime thread sleep: at queue depth 1 the answer usually comes sooner than
    /// a sleeping thread could be woken.
    ///
    /// [`UringOptions::spin`]: crate::UringOptions::spin
    async fn exchange<T>(
        &self,
        executor: usize,
        job: Job,
        mut answer: oneshot::Receiver<T>,
    ) -> std::result::Result<T, Option<Job>> {
        let flight = Flight::enter(&self.inner.in_flight);
        let queue = &self.inner.executors[executor].jobs;
        if let Err(mpsc::error::SendError(job)) = queue.send(job).await {
            return Err(Some(job));
        }
        let spin = self.inner.spin;
        if flight.alone && !spin.is_zero() {
            let until = Instant::now() + spin;
            loop {
                match answer.try_recv() {
                    Ok(out) => return Ok(out),
                    Err(oneshot::error::TryRecvError::Closed) => return Err(None),
                    Err(oneshot::error::TryRecvError::Empty) if Instant::now() < until => {
                        std::hint::spin_loop();
                    }
                    Err(oneshot::error::TryRecvError::Empty) => break,
                }
            }
        }
        answer.await.map_err(|_| None)
    }

    /// Sends a job that carries no buffer and awaits its reply.
    async fn call<T>(
        &self,
        ctx: &Context,
        executor: usize,
        job: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.exchange(executor, job(reply), answer)
            .await
            .map_err(|_| gone(ctx.clone()))
    }

    /// Sends a job that carries one buffer; the buffer comes back on every path (empty only if
    /// the executor died with it).
    async fn call_buf(
        &self,
        ctx: &Context,
        file: &OpenFile,
        job: impl FnOnce(oneshot::Sender<(std::io::Result<usize>, AlignedBuf)>) -> Job,
    ) -> BufResult<usize> {
        let (reply, answer) = oneshot::channel();
        match self.exchange(file.executor, job(reply), answer).await {
            Ok((Ok(n), buf)) => (Ok(n), buf),
            Ok((Err(e), buf)) => (Err(os(ctx, file, e)), buf),
            Err(job) => (
                Err(gone(ctx.clone())),
                job.map(Job::into_buf).unwrap_or_default(),
            ),
        }
    }
}

/// A caller between sending its job and getting the answer.
struct Flight<'a> {
    count: &'a AtomicUsize,
    /// No other caller was in flight when this one entered.
    alone: bool,
}

impl<'a> Flight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let before = count.fetch_add(1, Ordering::Relaxed);
        Self {
            count,
            alone: before == 0,
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
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
        let path: Arc<Path> = Arc::from(path);
        let ctx = Context::new(Op::Open).path(Arc::clone(&path));
        let timer = self.inner.stats.start(Op::Open);
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
        timer.finish(&res, |_| 0);
        Ok(self.inner.files.insert(res?))
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
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let ctx = Context::new(Op::Writev)
            .file(file)
            .offset(offset)
            .len(total as u64);
        let timer = self.inner.stats.start(Op::Writev);
        let parts = bufs.iter().map(|b| (b.as_ptr() as usize, b.len()));
        let f = match self.prepare(file, &ctx, Access::Write, offset, parts) {
            Ok(f) => f,
            Err(e) => {
                timer.err();
                return (Err(e), bufs);
            }
        };
        if bufs.is_empty() {
            timer.finish(&Ok::<usize, Error>(0), |_| 0);
            return (Ok(0), bufs);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Writev {
            key: f.key,
            bufs,
            offset,
            reply,
        };
        let (res, bufs) = match self.exchange(f.executor, job, answer).await {
            Ok((Ok(n), bufs)) => (Ok(n), bufs),
            Ok((Err(e), bufs)) => (Err(os(&ctx, &f, e)), bufs),
            Err(job) => (Err(gone(ctx)), job.map(Job::into_bufs).unwrap_or_default()),
        };
        timer.finish(&res, |&n| n as u64);
        (res, bufs)
    }

    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        let ctx = Context::new(Op::Sync).file(file);
        let timer = self.inner.stats.start(Op::Sync);
        let res = match self.prepare(file, &ctx, Access::Any, 0, std::iter::empty()) {
            Ok(f) => {
                let key = f.key;
                match self
                    .call(&ctx, f.executor, |reply| Job::Sync { key, kind, reply })
                    .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(os(&ctx, &f, e)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        timer.finish(&res, |_| 0);
        res
    }

    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        let ctx = Context::new(Op::Preallocate)
            .file(file)
            .offset(offset)
            .len(len);
        let timer = self.inner.stats.start(Op::Preallocate);
        let checked = self
            .prepare(file, &ctx, Access::Write, offset, std::iter::empty())
            .and_then(|f| check_range(&ctx, offset, len).map(|()| f));
        let res = match checked {
            // fallocate(2) refuses a zero length; the contract makes it a no-op.
            Ok(_) if len == 0 => Ok(()),
            Ok(f) => {
                let key = f.key;
                let job = |reply| Job::Fallocate {
                    key,
                    offset,
                    len,
                    reply,
                };
                match self.call(&ctx, f.executor, job).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(os(&ctx, &f, e)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        timer.finish(&res, |_| 0);
        res
    }

    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        let ctx = Context::new(Op::SetLen).file(file).len(len);
        let timer = self.inner.stats.start(Op::SetLen);
        let res = match self.prepare(file, &ctx, Access::Write, len, std::iter::empty()) {
            Ok(f) => {
                let job = |reply| Job::SetLen {
                    file: Arc::clone(&f),
                    len,
                    reply,
                };
                match self.call(&ctx, f.executor, job).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(os(&ctx, &f, e)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        timer.finish(&res, |_| 0);
        res
    }

    async fn file_len(&self, file: FileId) -> Result<u64> {
        let ctx = Context::new(Op::FileLen).file(file);
        let timer = self.inner.stats.start(Op::FileLen);
        let res = self.inner.files.get(file, || ctx.clone()).and_then(|f| {
            // `fstat` never waits for the device: no trip to the executor.
            f.std
                .metadata()
                .map(|m| m.len())
                .map_err(|e| os(&ctx, &f, e))
        });
        timer.finish(&res, |_| 0);
        res
    }

    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>> {
        let f = self
            .inner
            .files
            .get(file, || Context::new(Op::FileLen).file(file))?;
        Ok(f.access.direct)
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
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let ctx = Context::new(Op::Writev)
            .file(file)
            .offset(offset)
            .len(total as u64);
        let parts = bufs.iter().map(|b| (b.as_ptr() as usize, b.len()));
        let f = match self.prepare(file, &ctx, Access::Write, offset, parts) {
            Ok(f) => f,
            Err(e) => {
                self.inner.stats.start(Op::Writev).err();
                return (Err(e), bufs);
            }
        };
        if bufs.is_empty() || bufs.len() > IOV_MAX {
            // Nothing to write, or more than one WRITEV: the write, then the sync.
            return diskio::write_then_sync(self, file, bufs, offset, kind).await;
        }
        let timer = self.inner.stats.start(Op::Writev);
        let sync_timer = self.inner.stats.start(Op::Sync);
        let (reply, answer) = oneshot::channel();
        let job = Job::WriteSync {
            key: f.key,
            bufs,
            offset,
            kind,
            reply,
        };
        let (outcome, bufs) = match self.exchange(f.executor, job, answer).await {
            Ok(out) => out,
            Err(job) => {
                timer.err();
                sync_timer.err();
                let bufs = job.map(Job::into_bufs).unwrap_or_default();
                return (Err(gone(ctx)), bufs);
            }
        };
        match outcome {
            WriteSync::Synced(n) => {
                timer.finish(&Ok::<(), Error>(()), |_| n as u64);
                sync_timer.finish(&Ok::<(), Error>(()), |_| 0);
                (Ok(total), bufs)
            }
            WriteSync::Short(n) => {
                // Nothing was synced: finish the write and sync now (rewriting the prefix is
                // harmless: the same bytes at the same place).
                timer.finish(&Ok::<(), Error>(()), |_| n as u64);
                sync_timer.err();
                diskio::write_then_sync(self, file, bufs, offset, kind).await
            }
            WriteSync::WriteFailed(e) => {
                timer.err();
                sync_timer.err();
                (Err(os(&ctx, &f, e)), bufs)
            }
            WriteSync::SyncFailed(e) => {
                timer.finish(&Ok::<(), Error>(()), |_| total as u64);
                sync_timer.err();
                let sync_ctx = Context::new(Op::Sync).file(file);
                (Err(os(&sync_ctx, &f, e)), bufs)
            }
        }
    }
}
