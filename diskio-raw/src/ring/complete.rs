//! Completion: reaping, the lone caller's wait, the reaper thread, and abandoned operations.

use std::io;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};

use super::slots::{Deliveries, State, complete, free_slot, slot_mut};
use super::submit::retryable;
use super::{Done, Lone, Ring};

impl Ring {
    pub(super) fn reap_and_deliver(&self) {
        let mut out = Deliveries::default();
        {
            let mut st = self.lock();
            self.reap_locked(&mut st, &mut out);
        }
        out.deliver(self);
    }

    /// Takes every completion from the queue and records it.
    pub(super) fn reap_locked(&self, st: &mut State, out: &mut Deliveries) {
        // SAFETY: the state lock is held, and it is the only place a completion queue is made,
        // so no other `CompletionQueue` exists.
        let cq = unsafe { self.uring.completion_shared() };
        for cqe in cq {
            complete(st, &cqe, out);
        }
    }

    pub(super) fn poll_slot(&self, index: u32, cx: &mut TaskContext<'_>) -> Poll<Done> {
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
                            timers: slot.timers,
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
    pub(super) fn wait_if_alone(&self, index: u32, n: usize, lone: Lone) -> Option<Done> {
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
    pub(super) fn lone_sleep_allowed(&self) -> bool {
        self.ext_arg
            && !self.lone_wait.is_zero()
            && !matches!(
                tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
                Ok(tokio::runtime::RuntimeFlavor::CurrentThread)
            )
    }

    /// Reaps, and takes the operation's slot if it has completed; otherwise returns how many
    /// completions it still expects.
    pub(super) fn take_if_done(&self, index: u32) -> Result<Done, usize> {
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
                timers: slot.timers,
            })
        }) {
            Some(done) => Ok(done),
            None => Err(pending.max(1)),
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
}

/// Marks a slot abandoned if its future is dropped before completion.
pub(super) struct Abandon<'a> {
    pub(super) ring: &'a Ring,
    pub(super) index: u32,
    pub(super) armed: bool,
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
                    out.abandoned.push((keep, slot.results, slot.timers));
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
pub(super) struct ReaperExit<'a> {
    ring: &'a Ring,
}

impl Drop for ReaperExit<'_> {
    fn drop(&mut self) {
        self.ring.reaper_dead.store(true, Ordering::Release);
        self.ring.permits.close();
    }
}

pub(super) fn reaper_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the ring's reaper thread has stopped",
    )
}
