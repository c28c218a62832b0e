//! The ring: one io_uring instance shared by every caller, the table of operations in flight,
//! and the reaper thread.
//!
//! # Who does what
//!
//! - A **caller** (any task on any runtime) takes in-flight permits, records its operation in a
//!   slot of the table (with everything the kernel will touch: buffers, iovecs, path, file),
//!   pushes its SQE(s) and enters the kernel itself. Reads served from the page cache complete
//!   inside that `io_uring_enter`, so the caller reaps its own completion at once: no thread
//!   hop at all.
//! - The **reaper** thread waits in the kernel for completions only while some operation is
//!   submitted and not yet reaped (device I/O, syncs). It records results and wakes the tasks.
//!   With nothing outstanding it sleeps on a condition variable, so the completions that
//!   callers reap themselves never wake it.
//! - Anyone holding the lock reaps whatever completions are there, for everyone.
//!
//! # Memory the kernel may touch
//!
//! A slot owns the operation's resources until the kernel's completion for its last SQE is
//! reaped. A future dropped earlier only marks its slot abandoned; whoever reaps the last
//! completion then frees the resources. Shutdown waits for every slot to complete before the
//! ring (and anything it references) is released.

mod complete;
mod slots;
mod submit;

use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use io_uring::{IoUring, squeue};
use tokio::sync::Semaphore;

use self::complete::{Abandon, reaper_gone};
use self::slots::{Deliveries, State, alloc_slot, user_data};
pub(crate) use self::slots::{IoVecs, Keep, Timed, Timers};

/// `user_data` of the NOP that wakes the reaper for shutdown.
pub(super) const WAKE: u64 = u64::MAX;

/// Most SQEs one operation may submit as a chain.
pub(crate) const CHAIN_MAX: usize = 2;

/// How the caller of an operation that is alone in flight waits for it
/// ([`Ring::wait_if_alone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lone {
    /// A read or write, which a fast device or the page cache completes within microseconds:
    /// poll, then sleep in the kernel.
    Spin,
    /// An operation the kernel hands to a worker thread (sync, open, fallocate): sleep in the
    /// kernel at once, leaving the CPU to that worker.
    Sleep,
}

/// Counters of the ring, readable by users ([`crate::RingStats`]).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) enters: AtomicU64,
    pub(crate) sqes: AtomicU64,
    pub(crate) waits: AtomicU64,
}

pub(crate) struct Ring {
    uring: IoUring,
    state: Mutex<State>,
    reaper_wake: Condvar,
    permits: Semaphore,
    pub(crate) counters: Counters,
    in_flight_max: usize,
    spin: Duration,
    lone_wait: Duration,
    /// The kernel takes a timeout with a wait (`IORING_FEAT_EXT_ARG`).
    ext_arg: bool,
    /// The kernel polls the submission queue with a thread of its own (`IORING_SETUP_SQPOLL`).
    sqpoll: bool,
    /// Set when the reaper thread is gone (it never panics; this guards against the
    /// impossible, so that callers fail instead of hanging).
    reaper_dead: AtomicBool,
}

/// The ring operation's results, one per SQE, and what it kept.
pub(crate) struct Done {
    pub(crate) results: [i32; CHAIN_MAX],
    pub(crate) keep: Keep,
    pub(crate) timers: Timers,
}

impl Ring {
    pub(crate) fn new(
        uring: IoUring,
        in_flight_max: usize,
        spin: Duration,
        lone_wait: Duration,
    ) -> Self {
        let ext_arg = uring.params().is_feature_ext_arg();
        let sqpoll = uring.params().is_setup_sqpoll();
        Self {
            uring,
            state: Mutex::new(State {
                slots: Vec::with_capacity(in_flight_max.min(4096)),
                free: Vec::new(),
                unreaped: 0,
                reaper_parked: false,
                submitting: false,
                shutdown: false,
            }),
            reaper_wake: Condvar::new(),
            permits: Semaphore::new(in_flight_max),
            counters: Counters::default(),
            in_flight_max,
            spin,
            lone_wait,
            ext_arg,
            sqpoll,
            reaper_dead: AtomicBool::new(false),
        }
    }

    pub(crate) fn uring(&self) -> &IoUring {
        &self.uring
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is completed before the lock is released (nothing in it
        // panics), so a poisoned lock still guards a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one operation: `sqes` (linked by the caller where it wants a chain) and the
    /// resources they point into. Returns each SQE's result, the resources and the timers.
    /// `timers` are the operation's stats clocks: if the future is dropped once the operation
    /// is submitted, the slot finishes them from the kernel's results. `lone` says how the
    /// caller waits when the operation is the only one in flight.
    ///
    /// # Safety
    ///
    /// Every address in `sqes` must point into memory owned by `keep` (or be otherwise valid
    /// until the operation completes), and every fixed-file or fixed-buffer index must be
    /// registered with this ring for as long as `keep` lives.
    pub(crate) async unsafe fn run(
        &self,
        sqes: &mut [squeue::Entry],
        keep: Keep,
        timers: Timers,
        lone: Lone,
    ) -> Result<Done, (io::Error, Keep, Timers)> {
        let n = sqes.len();
        debug_assert!((1..=CHAIN_MAX).contains(&n));
        if self.reaper_dead.load(Ordering::Acquire) {
            return Err((reaper_gone(), keep, timers));
        }
        // A future dropped while it waits for permits has submitted nothing: its timers, still
        // in `timers`, count it as an error when they drop.
        match self.permits.acquire_many(n as u32).await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err((reaper_gone(), keep, timers)),
        }
        let mut out = Deliveries::default();
        let (index, submit) = {
            let mut st = self.lock();
            let index = alloc_slot(&mut st, n, keep, timers);
            for (k, sqe) in sqes.iter_mut().enumerate() {
                sqe.set_user_data(user_data(index, k));
            }
            st.unreaped += n;
            // SAFETY: the caller guarantees the entries' memory lives in `keep`, which the
            // slot now owns until the last completion is reaped.
            unsafe { self.push_locked(&mut st, sqes, &mut out) };
            // With `SQPOLL` the kernel's thread takes entries as they are queued: each caller
            // makes sure it is awake.
            let submit = self.sqpoll || !std::mem::replace(&mut st.submitting, true);
            (index, submit)
        };
        out.deliver(self);
        let mut guard = Abandon {
            ring: self,
            index,
            armed: true,
        };
        if submit {
            if self.sqpoll {
                self.enter();
            } else {
                self.submit_queued();
            }
        }
        if let Some(done) = self.wait_if_alone(index, n, lone) {
            guard.armed = false;
            return Ok(done);
        }
        let done = poll_fn(|cx| self.poll_slot(index, cx)).await;
        guard.armed = false;
        Ok(done)
    }

    /// Counts its caller in flight, if nothing else is: for an operation that the caller then
    /// runs itself, on its own thread, instead of through the ring. While the permit is held,
    /// other operations see that they are not alone.
    pub(crate) fn alone(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if self.reaper_dead.load(Ordering::Acquire) {
            return None;
        }
        let permit = self.permits.try_acquire().ok()?;
        (self.permits.available_permits() + 1 == self.in_flight_max).then_some(permit)
    }

    /// Asks the reaper to finish: it stops once every operation in flight has completed.
    pub(crate) fn shutdown(&self) {
        let mut out = Deliveries::default();
        let mut st = self.lock();
        st.shutdown = true;
        st.reaper_parked = false;
        // A NOP completes at once and wakes the reaper if it waits in the kernel.
        let nop = io_uring::opcode::Nop::new().build().user_data(WAKE);
        // SAFETY: a NOP references no memory.
        unsafe { self.push_locked(&mut st, std::slice::from_ref(&nop), &mut out) };
        drop(st);
        out.deliver(self);
        self.reaper_wake.notify_one();
        self.enter();
    }
}
