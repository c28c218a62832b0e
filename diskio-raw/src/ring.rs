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

use std::ffi::CString;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use diskio::AlignedBuf;
use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, squeue};
use tokio::sync::Semaphore;

use crate::files::OpenFile;

/// `user_data` of the NOP that wakes the reaper for shutdown.
const WAKE: u64 = u64::MAX;

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

/// The iovecs of a vectored write; owned by the slot while the kernel reads them.
pub(crate) struct IoVecs(pub(crate) Vec<libc::iovec>);

// SAFETY: the iovecs point into buffers owned by the same slot (`Keep::Bufs`); they are only
// plain addresses and lengths, read by the kernel, and moving them between threads changes
// nothing about what they point to.
unsafe impl Send for IoVecs {}

/// What an operation keeps alive until the kernel is done with it.
pub(crate) enum Keep {
    /// Nothing but the file.
    File(Arc<OpenFile>),
    /// One buffer (read or write).
    Buf(AlignedBuf, Arc<OpenFile>),
    /// Several buffers and the iovecs describing them (vectored write).
    Bufs {
        bufs: Vec<AlignedBuf>,
        _iovecs: IoVecs,
        _file: Arc<OpenFile>,
    },
    /// The path of an open (only kept alive for the kernel).
    Path { _path: CString },
}

impl Keep {
    /// Releases what an abandoned operation kept, once the kernel is done with it. An open
    /// that succeeded after its caller left still made a descriptor: close it.
    fn abandon(self, results: &[i32]) {
        if let (Keep::Path { .. }, Some(&fd)) = (&self, results.first()) {
            if fd >= 0 {
                close_orphan(fd);
            }
        }
    }
}

/// Closes a descriptor that an open made after its caller left.
fn close_orphan(fd: i32) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: the kernel just returned `fd` for an open whose caller is gone; nothing else in
    // the process owns it, so taking ownership (and closing it on drop) is sound.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// One operation in flight.
struct Slot {
    /// Completions still expected (0 when done).
    pending: u8,
    /// Submitted SQEs (and permits held).
    sqes: u8,
    results: [i32; CHAIN_MAX],
    waker: Option<Waker>,
    abandoned: bool,
    keep: Option<Keep>,
}

struct State {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// SQEs pushed whose completion has not been reaped.
    unreaped: usize,
    reaper_parked: bool,
    shutdown: bool,
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
    /// Set when the reaper thread is gone (it never panics; this guards against the
    /// impossible, so that callers fail instead of hanging).
    reaper_dead: AtomicBool,
}

/// Completions collected under the lock, delivered after it is released.
#[derive(Default)]
struct Deliveries {
    wakers: Vec<Waker>,
    abandoned: Vec<(Keep, [i32; CHAIN_MAX])>,
    permits: usize,
}

impl Deliveries {
    fn deliver(self, ring: &Ring) {
        if self.permits > 0 {
            ring.permits.add_permits(self.permits);
        }
        for (keep, results) in self.abandoned {
            keep.abandon(&results);
        }
        for waker in self.wakers {
            waker.wake();
        }
    }
}

/// The ring operation's results, one per SQE, and what it kept.
pub(crate) struct Done {
    pub(crate) results: [i32; CHAIN_MAX],
    pub(crate) keep: Keep,
}

impl Ring {
    pub(crate) fn new(
        uring: IoUring,
        in_flight_max: usize,
        spin: Duration,
        lone_wait: Duration,
    ) -> Self {
        let ext_arg = uring.params().is_feature_ext_arg();
        Self {
            uring,
            state: Mutex::new(State {
                slots: Vec::with_capacity(in_flight_max.min(4096)),
                free: Vec::new(),
                unreaped: 0,
                reaper_parked: false,
                shutdown: false,
            }),
            reaper_wake: Condvar::new(),
            permits: Semaphore::new(in_flight_max),
            counters: Counters::default(),
            in_flight_max,
            spin,
            lone_wait,
            ext_arg,
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
    /// resources they point into. Returns each SQE's result and the resources. `lone` says how
    /// the caller waits when the operation is the only one in flight.
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
        lone: Lone,
    ) -> Result<Done, (io::Error, Keep)> {
        let n = sqes.len();
        debug_assert!((1..=CHAIN_MAX).contains(&n));
        if self.reaper_dead.load(Ordering::Acquire) {
            return Err((reaper_gone(), keep));
        }
        match self.permits.acquire_many(n as u32).await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err((reaper_gone(), keep)),
        }
        let mut out = Deliveries::default();
        let index = {
            let mut st = self.lock();
            let index = alloc_slot(&mut st, n, keep);
            for (k, sqe) in sqes.iter_mut().enumerate() {
                sqe.set_user_data(user_data(index, k));
            }
            st.unreaped += n;
            // SAFETY: the caller guarantees the entries' memory lives in `keep`, which the
            // slot now owns until the last completion is reaped.
            unsafe { self.push_locked(&mut st, sqes, &mut out) };
            index
        };
        out.deliver(self);
        let mut guard = Abandon {
            ring: self,
            index,
            armed: true,
        };
        self.enter();
        if let Some(done) = self.wait_if_alone(index, n, lone) {
            guard.armed = false;
            return Ok(done);
        }
        let done = poll_fn(|cx| self.poll_slot(index, cx)).await;
        guard.armed = false;
        Ok(done)
    }

    /// Pushes entries, flushing the submission queue into the kernel when it is full.
    ///
    /// # Safety
    ///
    /// As [`run`](Self::run), for each entry.
    unsafe fn push_locked(&self, st: &mut State, sqes: &[squeue::Entry], out: &mut Deliveries) {
        // SAFETY: the state lock is held, and it is the only place a submission queue is made,
        // so no other `SubmissionQueue` exists.
        let mut sq = unsafe { self.uring.submission_shared() };
        // SAFETY: the caller vouches for the entries.
        while unsafe { sq.push_multiple(sqes) }.is_err() {
            // Full: hand what is queued to the kernel, reaping to make room if it pushes back.
            sq.sync();
            match self.uring.submitter().submit() {
                Ok(_) => {}
                Err(e) if retryable(&e) => {
                    // The completion queue is backed up: reap to make room (delivered by the
                    // caller once the lock is released).
                    self.reap_locked(st, out);
                    std::thread::yield_now();
                }
                Err(e) => {
                    tracing::error!(error = %e, "io_uring_enter failed while flushing a full queue");
                    std::thread::yield_now();
                }
            }
            sq.sync();
        }
        sq.sync();
    }

    /// Submits whatever is queued. Errors the kernel may return under pressure are retried;
    /// the entries stay queued for the next `io_uring_enter` (the reaper's included), so an
    /// operation is never lost.
    fn enter(&self) {
        loop {
            match self.uring.submitter().submit() {
                Ok(n) => {
                    self.counters.enters.fetch_add(1, Ordering::Relaxed);
                    self.counters.sqes.fetch_add(n as u64, Ordering::Relaxed);
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if retryable(&e) => {
                    // The completion queue is backed up: reap, then let the reaper's enter
                    // submit what is left.
                    self.reap_and_deliver();
                    self.ensure_reaper();
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "io_uring_enter failed; the reaper will retry");
                    self.ensure_reaper();
                    return;
                }
            }
        }
    }

    fn reap_and_deliver(&self) {
        let mut out = Deliveries::default();
        {
            let mut st = self.lock();
            self.reap_locked(&mut st, &mut out);
        }
        out.deliver(self);
    }

    /// Takes every completion from the queue and records it.
    fn reap_locked(&self, st: &mut State, out: &mut Deliveries) {
        // SAFETY: the state lock is held, and it is the only place a completion queue is made,
        // so no other `CompletionQueue` exists.
        let cq = unsafe { self.uring.completion_shared() };
        for cqe in cq {
            complete(st, &cqe, out);
        }
    }

    fn poll_slot(&self, index: u32, cx: &mut TaskContext<'_>) -> Poll<Done> {
        let mut out = Deliveries::default();
        let mut st = self.lock();
        self.reap_locked(&mut st, &mut out);
        let ready = match slot_mut(&mut st, index) {
            Some(slot) if slot.pending == 0 => true,
            Some(slot) => {
                match &slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                false
            }
            None => false,
        };
        let poll = if ready {
            match free_slot(&mut st, index) {
                Some(slot) => {
                    out.permits += usize::from(slot.sqes);
                    match slot.keep {
                        Some(keep) => Poll::Ready(Done {
                            results: slot.results,
                            keep,
                        }),
                        None => Poll::Pending,
                    }
                }
                None => Poll::Pending,
            }
        } else {
            Poll::Pending
        };
        let wake_reaper = poll.is_pending() && st.unreaped > 0 && st.reaper_parked;
        if wake_reaper {
            st.reaper_parked = false;
        }
        drop(st);
        if wake_reaper {
            self.reaper_wake.notify_one();
        }
        out.deliver(self);
        poll
    }

    /// When this operation is the only one in flight, its caller waits for it here instead of
    /// handing it to the reaper: at queue depth 1 that saves the reaper's wake-up and the task's
    /// (two thread hops, 20–60 µs on a virtual machine). A data operation first polls the
    /// completion queue for up to `spin`; any operation then sleeps in `io_uring_enter` for up to
    /// `lone_wait` more (without burning the CPU that a kernel worker running an fsync may need).
    /// The sleep is skipped on a current-thread Tokio runtime, whose only thread would stall.
    /// Under load neither happens.
    fn wait_if_alone(&self, index: u32, n: usize, lone: Lone) -> Option<Done> {
        if self.permits.available_permits() + n != self.in_flight_max {
            return None;
        }
        let spin = if lone == Lone::Spin {
            self.spin
        } else {
            Duration::ZERO
        };
        let sleep = if self.lone_sleep_allowed() {
            self.lone_wait
        } else {
            Duration::ZERO
        };
        if spin.is_zero() && sleep.is_zero() {
            return None;
        }
        let start = Instant::now();
        let spin_until = start + spin;
        let sleep_until = spin_until + sleep;
        loop {
            let pending = match self.take_if_done(index) {
                Ok(done) => return Some(done),
                Err(pending) => pending,
            };
            let now = Instant::now();
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            if now >= sleep_until {
                return None;
            }
            let left = Timespec::from(sleep_until - now);
            let args = SubmitArgs::new().timespec(&left);
            // Returns when as many completions as this operation still expects are queued (so
            // a linked write's completion does not wake the thread before its sync's), at the
            // timeout (ETIME) or on a signal; the loop sorts out which.
            let _ = self.uring.submitter().submit_with_args(pending, &args);
        }
    }

    /// Whether a lone caller may sleep in the kernel: the kernel takes a timeout with the wait
    /// (Linux 5.11+), and the thread is not a current-thread runtime's only one.
    fn lone_sleep_allowed(&self) -> bool {
        self.ext_arg
            && !self.lone_wait.is_zero()
            && !matches!(
                tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
                Ok(tokio::runtime::RuntimeFlavor::CurrentThread)
            )
    }

    /// Reaps, and takes the operation's slot if it has completed; otherwise returns how many
    /// completions it still expects.
    fn take_if_done(&self, index: u32) -> Result<Done, usize> {
        let mut out = Deliveries::default();
        let mut st = self.lock();
        self.reap_locked(&mut st, &mut out);
        let pending = slot_mut(&mut st, index).map_or(1, |s| usize::from(s.pending));
        let taken = if pending == 0 {
            free_slot(&mut st, index)
        } else {
            None
        };
        drop(st);
        if let Some(slot) = &taken {
            out.permits += usize::from(slot.sqes);
        }
        out.deliver(self);
        match taken.and_then(|slot| {
            slot.keep.map(|keep| Done {
                results: slot.results,
                keep,
            })
        }) {
            Some(done) => Ok(done),
            None => Err(pending.max(1)),
        }
    }

    /// Makes sure the reaper is waiting in the kernel if anything is outstanding.
    fn ensure_reaper(&self) {
        let mut st = self.lock();
        if st.unreaped > 0 && st.reaper_parked {
            st.reaper_parked = false;
            drop(st);
            self.reaper_wake.notify_one();
        }
    }

    /// The reaper thread's loop: runs until shutdown is asked and nothing is in flight.
    pub(crate) fn reap_until_shutdown(&self) {
        let guard = ReaperExit { ring: self };
        loop {
            let mut out = Deliveries::default();
            let mut st = self.lock();
            self.reap_locked(&mut st, &mut out);
            if st.unreaped == 0 {
                if st.shutdown {
                    drop(st);
                    out.deliver(self);
                    break;
                }
                st.reaper_parked = true;
                drop(st);
                // Deliver before sleeping: these tasks are waiting for exactly this.
                out.deliver(self);
                let mut st = self.lock();
                while st.reaper_parked && !st.shutdown {
                    st = self
                        .reaper_wake
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                st.reaper_parked = false;
                continue;
            }
            drop(st);
            out.deliver(self);
            self.counters.waits.fetch_add(1, Ordering::Relaxed);
            match self.uring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) || retryable(&e) => {}
                Err(e) => {
                    tracing::error!(error = %e, "io_uring_enter failed in the reaper; retrying");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        drop(guard);
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

/// Marks a slot abandoned if its future is dropped before completion.
struct Abandon<'a> {
    ring: &'a Ring,
    index: u32,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut out = Deliveries::default();
        let mut st = self.ring.lock();
        self.ring.reap_locked(&mut st, &mut out);
        let finished = match slot_mut(&mut st, self.index) {
            Some(slot) if slot.pending == 0 => true,
            Some(slot) => {
                slot.abandoned = true;
                slot.waker = None;
                false
            }
            None => false,
        };
        if finished {
            if let Some(slot) = free_slot(&mut st, self.index) {
                out.permits += usize::from(slot.sqes);
                if let Some(keep) = slot.keep {
                    out.abandoned.push((keep, slot.results));
                }
            }
        }
        let wake_reaper = st.unreaped > 0 && st.reaper_parked;
        if wake_reaper {
            st.reaper_parked = false;
        }
        drop(st);
        if wake_reaper {
            self.ring.reaper_wake.notify_one();
        }
        out.deliver(self.ring);
    }
}

/// Fails waiting callers if the reaper thread ever stops without being asked.
struct ReaperExit<'a> {
    ring: &'a Ring,
}

impl Drop for ReaperExit<'_> {
    fn drop(&mut self) {
        self.ring.reaper_dead.store(true, Ordering::Release);
        self.ring.permits.close();
    }
}

fn reaper_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the ring's reaper thread has stopped",
    )
}

fn retryable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN))
}

fn user_data(index: u32, k: usize) -> u64 {
    (u64::from(index) << 8) | k as u64
}

fn alloc_slot(st: &mut State, n: usize, keep: Keep) -> u32 {
    let slot = Slot {
        pending: n as u8,
        sqes: n as u8,
        results: [0; CHAIN_MAX],
        waker: None,
        abandoned: false,
        keep: Some(keep),
    };
    match st.free.pop() {
        Some(index) => {
            st.slots[index as usize] = Some(slot);
            index
        }
        None => {
            st.slots.push(Some(slot));
            // Bounded by the permits (at most `in_flight_max` slots), far below `u32::MAX`.
            (st.slots.len() - 1) as u32
        }
    }
}

fn slot_mut(st: &mut State, index: u32) -> Option<&mut Slot> {
    st.slots.get_mut(index as usize).and_then(Option::as_mut)
}

fn free_slot(st: &mut State, index: u32) -> Option<Slot> {
    let slot = st.slots.get_mut(index as usize).and_then(Option::take);
    if slot.is_some() {
        st.free.push(index);
    }
    slot
}

/// Records one completion.
fn complete(st: &mut State, cqe: &cqueue::Entry, out: &mut Deliveries) {
    let data = cqe.user_data();
    if data == WAKE {
        return;
    }
    let index = (data >> 8) as u32;
    let k = (data & 0xff) as usize;
    st.unreaped = st.unreaped.saturating_sub(1);
    let Some(slot) = slot_mut(st, index) else {
        tracing::error!(user_data = data, "completion for no operation");
        return;
    };
    if let Some(r) = slot.results.get_mut(k) {
        *r = cqe.result();
    }
    slot.pending = slot.pending.saturating_sub(1);
    if slot.pending > 0 {
        return;
    }
    if slot.abandoned {
        if let Some(slot) = free_slot(st, index) {
            out.permits += usize::from(slot.sqes);
            if let Some(keep) = slot.keep {
                out.abandoned.push((keep, slot.results));
            }
        }
    } else if let Some(w) = slot.waker.take() {
        out.wakers.push(w);
    }
}
