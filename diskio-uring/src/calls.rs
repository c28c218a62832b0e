//! The caller's side of an executor's job queue: sending a job, and waiting for its answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use diskio::{AlignedBuf, BufResult, Context, Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::UringDisk;
use crate::executor::Job;
use crate::files::OpenFile;

/// The executor is gone (its thread panicked) or dropped the job: never a hang.
pub(crate) fn gone(ctx: Context) -> Error {
    tracing::error!(%ctx, "a diskio-uring executor stopped before answering");
    Error::Shutdown { ctx }
}

impl UringDisk {
    pub(crate) fn queue(&self, file: &OpenFile) -> &mpsc::Sender<Job> {
        &self.inner.executors[file.executor].jobs
    }

    /// Sends `job` to `executor` and awaits `answer`. `Err(Some(job))` gives back a job the
    /// executor never took (it is gone); `Err(None)` means it took the job and died.
    ///
    /// A caller alone in flight polls for its answer for up to [`UringOptions::spin`] before
    /// letting its runtime thread sleep: at queue depth 1 the answer usually comes sooner than
    /// a sleeping thread could be woken.
    ///
    /// [`UringOptions::spin`]: crate::UringOptions::spin
    pub(crate) async fn exchange<T>(
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
    pub(crate) async fn call<T>(
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
    pub(crate) async fn call_buf(
        &self,
        ctx: &Context,
        file: &OpenFile,
        job: impl FnOnce(oneshot::Sender<(std::io::Result<usize>, AlignedBuf)>) -> Job,
    ) -> BufResult<usize> {
        let (reply, answer) = oneshot::channel();
        match self.exchange(file.executor, job(reply), answer).await {
            Ok((Ok(n), buf)) => (Ok(n), buf),
            Ok((Err(e), buf)) => (Err(file.err(ctx.clone(), e)), buf),
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
