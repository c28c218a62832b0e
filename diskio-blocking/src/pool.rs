//! A fixed set of worker threads fed by a bounded queue.
//!
//! Callers first take a slot ([`Pool::slot`], an async wait on a fair semaphore: this is the
//! backpressure), then hand the job over; the job keeps its slot until it has run. So jobs queued
//! plus jobs running never exceed `in_flight_max`, and callers beyond that wait in FIFO order.
//!
//! At low queue depth, wake-ups dominate: a futex wake of a sleeping worker, then of the parked
//! runtime thread, each cost more than a `pread` from the page cache. So one idle worker at a
//! time polls the queue for `spin` before sleeping (only while no other job runs), and a caller that is alone in the queue polls
//! its result for up to `spin` before yielding to the runtime. Both are off with `spin = 0`.
//! A durable job, whose sync outlasts any spin, runs on its caller's thread instead when it is
//! alone ([`Slot::run_here_if_alone`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Pool {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    in_flight_max: usize,
    /// How long a caller that is alone in the queue polls for its result before sleeping.
    caller_spin: Duration,
    /// Whether a durable job alone in the queue runs on its caller's thread
    /// ([`Slot::run_here_if_alone`]).
    lone_here: bool,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    spin: Duration,
    /// Jobs in the queue, readable without the lock by spinning workers.
    queued: AtomicUsize,
    /// Workers spinning now; at most one spins at a time, the others sleep at once.
    spinners: AtomicUsize,
    /// Jobs running now. Workers spin only when none is (queue depth 1): under load, a spinning
    /// thread would take a core from the threads doing the work.
    running: AtomicUsize,
}

struct State {
    jobs: VecDeque<Job>,
    sleeping: usize,
    shutdown: bool,
}

/// The pool was shut down, or the worker running the job died.
#[derive(Debug)]
pub(crate) struct PoolGone;

/// A reserved place in the queue.
pub(crate) struct Slot<'a> {
    pool: &'a Pool,
    permit: OwnedSemaphorePermit,
}

impl Pool {
    pub(crate) fn new(
        threads: usize,
        in_flight_max: usize,
        spin: Duration,
        lone_here: bool,
        name: &str,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::with_capacity(in_flight_max.min(4096)),
                sleeping: 0,
                shutdown: false,
            }),
            ready: Condvar::new(),
            spin,
            queued: AtomicUsize::new(0),
            spinners: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        });
        let mut pool = Self {
            shared,
            slots: Arc::new(Semaphore::new(in_flight_max)),
            in_flight_max,
            caller_spin: spin,
            lone_here,
            threads: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || shared.work())?;
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// Waits for a place in the queue.
    pub(crate) async fn slot(&self) -> Result<Slot<'_>, PoolGone> {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| PoolGone)?;
        Ok(Slot { pool: self, permit })
    }
}

impl Slot<'_> {
    /// As [`run`](Self::run), except that a job alone in the queue runs right here, on the
    /// caller's thread, when that thread may block: a worker of a multi-thread Tokio runtime
    /// (whose other workers take over its queued tasks meanwhile). For the durable operations,
    /// whose sync outlasts any spin: at queue depth 1 this saves the hand-off to a worker and
    /// the wake-up back, the two thread hops that kept a lone write + `fdatasync` at 0.84x the
    /// IOPS of a thread doing it itself.
    pub(crate) async fn run_here_if_alone<T, F>(self, job: F) -> Result<T, PoolGone>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.pool.lone_here && self.alone() && may_block() {
            let out = job();
            drop(self.permit);
            return Ok(out);
        }
        self.run(job).await
    }

    /// No other job is queued or running: every permit but this one is free.
    fn alone(&self) -> bool {
        self.pool.slots.available_permits() + 1 == self.pool.in_flight_max
    }

    /// Runs `job` on a worker and waits for its output. If the caller stops waiting, the job
    /// still runs to the end and its output (buffers included) is dropped on the worker.
    pub(crate) async fn run<T, F>(self, job: F) -> Result<T, PoolGone>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, mut rx) = oneshot::channel();
        // Alone in the queue (queue depth 1): the result usually comes back within a few
        // microseconds, sooner than a parked runtime thread could be woken. Poll for it briefly.
        let alone = self.alone();
        let permit = self.permit;
        let job: Job = Box::new(move || {
            let out = job();
            drop(permit);
            let _ = tx.send(out);
        });
        self.pool.shared.push(job)?;
        if alone && !self.pool.caller_spin.is_zero() {
            let until = Instant::now() + self.pool.caller_spin;
            loop {
                match rx.try_recv() {
                    Ok(out) => return Ok(out),
                    Err(oneshot::error::TryRecvError::Closed) => return Err(PoolGone),
                    Err(oneshot::error::TryRecvError::Empty) if Instant::now() < until => {
                        std::hint::spin_loop();
                    }
                    Err(oneshot::error::TryRecvError::Empty) => break,
                }
            }
        }
        rx.await.map_err(|_| PoolGone)
    }
}

/// Whether the calling thread may block for a system call: a worker of a multi-thread Tokio
/// runtime. Not a current-thread runtime's only thread, nor a thread outside Tokio (whose
/// executor is unknown).
fn may_block() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs never run under the lock, so the state is consistent even after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Job) -> Result<(), PoolGone> {
        let mut state = self.lock();
        if state.shutdown {
            return Err(PoolGone);
        }
        state.jobs.push_back(job);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let wake = state.sleeping > 0;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    fn work(&self) {
        while let Some(job) = self.next() {
            self.running.fetch_add(1, Ordering::Relaxed);
            job();
            self.running.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The next job; `None` once shut down and drained.
    fn next(&self) -> Option<Job> {
        let may_spin = !self.spin.is_zero()
            && self.running.load(Ordering::Relaxed) == 0
            && self
                .spinners
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        let job = self.next_job(if may_spin { self.spin } else { Duration::ZERO });
        if may_spin {
            self.spinners.store(0, Ordering::Release);
        }
        job
    }

    fn next_job(&self, spin: Duration) -> Option<Job> {
        let spin_until = Instant::now() + spin;
        loop {
            let mut state = self.lock();
            if let Some(job) = self.pop(&mut state) {
                return Some(job);
            }
            if state.shutdown {
                return None;
            }
            if Instant::now() >= spin_until {
                state.sleeping += 1;
                let mut state = self
                    .ready
                    .wait_while(state, |s| s.jobs.is_empty() && !s.shutdown)
                    .unwrap_or_else(PoisonError::into_inner);
                state.sleeping -= 1;
                // `None` here means shut down and drained.
                return self.pop(&mut state);
            }
            drop(state);
            while self.queued.load(Ordering::Relaxed) == 0 && Instant::now() < spin_until {
                std::hint::spin_loop();
            }
        }
    }

    fn pop(&self, state: &mut State) -> Option<Job> {
        let job = state.jobs.pop_front()?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }
}

impl Drop for Pool {
    /// Stops accepting jobs, lets the workers finish every queued job, and joins them.
    fn drop(&mut self) {
        self.slots.close();
        self.shared.lock().shutdown = true;
        self.shared.ready.notify_all();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}
