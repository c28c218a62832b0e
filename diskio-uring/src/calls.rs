//! The caller's side of an executor's job queue: sending a job, and waiting for its answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use diskio::{AlignedBuf, BufResult, Context, Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::UringDisk;
use diskio::backend::OpTimer;

use crate::executor::{Clocks, Counted, Job, Reply};
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
    pub(crate) async fn exchange<T: Counted>(
        &self,
        executor: usize,
        job: Job,
        answer: oneshot::Receiver<(T, Clocks)>,
    ) -> std::result::Result<(T, Clocks), Option<Job>> {
        // Dropped before it takes the answer, the guard counts an answer already sent.
        let mut guard = Answer(Some(answer));
        let Some(answer) = guard.0.as_mut() else {
            return Err(None);
        };
        let flight = Flight::enter(&self.inner.in_flight);
        let executor = &self.inner.executors[executor];
        // Counted before it is sent: the executor may finish it before `send` returns.
        executor.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(job)) = executor.jobs.send(job).await {
            executor.pending.fetch_sub(1, Ordering::AcqRel);
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
        let out = answer.await.map_err(|_| None);
        guard.0 = None;
        out
    }

    /// A durable operation on `file` may run right here, on the caller's thread
    /// ([`UringOptions::lone_sync_here`]): it is on, this thread may block (a worker of a
    /// multi-thread Tokio runtime), no other caller is in flight, and nothing of anyone's is
    /// queued or running on the file's executor (so no earlier operation on the file is still
    /// on its way to the ring). The returned guard counts the caller in flight.
    ///
    /// [`UringOptions::lone_sync_here`]: crate::UringOptions::lone_sync_here
    pub(crate) fn lone_here(&self, file: &OpenFile) -> Option<Flight<'_>> {
        if !self.inner.lone_sync_here || !may_block() {
            return None;
        }
        let flight = Flight::enter(&self.inner.in_flight);
        let executor = &self.inner.executors[file.executor];
        let idle = executor.pending.load(Ordering::Acquire) == 0;
        (flight.alone && idle).then_some(flight)
    }

    /// Sends a job that carries no buffer and awaits its reply, with the clocks it carried.
    pub(crate) async fn call<T: Counted>(
        &self,
        ctx: &Context,
        executor: usize,
        clocks: Clocks,
        job: impl FnOnce(Reply<T>) -> Job,
    ) -> Result<(T, Clocks)> {
        let (reply, answer) = Reply::new(clocks);
        self.exchange(executor, job(reply), answer)
            .await
            .map_err(|_| gone(ctx.clone()))
    }

    /// Sends a job that carries one buffer, its clock with it, and finishes the clock; the
    /// buffer comes back on every path (empty only if the executor died with it).
    pub(crate) async fn call_buf(
        &self,
        ctx: &Context,
        file: &OpenFile,
        timer: OpTimer,
        job: impl FnOnce(Reply<(std::io::Result<usize>, AlignedBuf)>) -> Job,
    ) -> BufResult<usize> {
        let (reply, answer) = Reply::new([Some(timer), None]);
        let (res, buf, clocks) = match self.exchange(file.executor, job(reply), answer).await {
            Ok(((Ok(n), buf), clocks)) => (Ok(n), buf, clocks),
            Ok(((Err(e), buf), clocks)) => (Err(file.err(ctx.clone(), e)), buf, clocks),
            // The clock went with the job: dropped unfinished, it counts an error.
            Err(job) => (
                Err(gone(ctx.clone())),
                job.map(Job::into_buf).unwrap_or_default(),
                [None, None],
            ),
        };
        if let [Some(timer), _] = clocks {
            timer.finish(&res, |&n| n as u64);
        }
        (res, buf)
    }
}

/// The receiver of a job's answer. If the caller's future is dropped after the executor sent
/// the answer and before the caller took it, the answer's clocks are finished here; closed
/// first, so an answer sent later fails to send and the executor finishes them instead.
struct Answer<T: Counted>(Option<oneshot::Receiver<(T, Clocks)>>);

impl<T: Counted> Drop for Answer<T> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.0.take() {
            rx.close();
            if let Ok((value, clocks)) = rx.try_recv() {
                value.count(clocks);
            }
        }
    }
}

/// Whether the calling thread may block for a system call: a worker of a multi-thread Tokio
/// runtime (not a current-thread runtime's only thread, nor a thread outside Tokio).
fn may_block() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// A caller between sending its job and getting the answer (or running it itself).
pub(crate) struct Flight<'a> {
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
