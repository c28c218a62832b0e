//! Submission: pushing entries and entering the kernel.

use std::io;
use std::sync::atomic::Ordering;

use io_uring::squeue;

use super::Ring;
use super::slots::{Deliveries, State};

/// Most passes of [`Ring::submit_queued`].
const SUBMIT_PASSES: usize = 8;

impl Ring {
    /// Pushes entries, flushing the submission queue into the kernel when it is full.
    ///
    /// # Safety
    ///
    /// As [`run`](Self::run), for each entry.
    pub(super) unsafe fn push_locked(
        &self,
        st: &mut State,
        sqes: &[squeue::Entry],
        out: &mut Deliveries,
    ) {
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

    /// Submits what is queued, then again while other callers queued more meanwhile: they found
    /// `submitting` set and left their entries to this caller. So under load one
    /// `io_uring_enter` carries several operations (one pass through the block layer's plug, one
    /// doorbell for the device), and callers do not contend for the kernel's ring lock, which
    /// spinning submitters made 10% of the CPU at 32 reads in flight. Completions that came in
    /// meanwhile (page-cache reads complete inside the submission) go to their tasks at once.
    ///
    /// At most [`SUBMIT_PASSES`] passes, so that a steady stream of other callers' entries does
    /// not keep this caller from its own operation: the last pass clears `submitting` before it
    /// enters, so what was queued until then goes in with it and later callers submit their
    /// own. The caller must have set `State::submitting`; this clears it.
    pub(super) fn submit_queued(&self) {
        for pass in 1..=SUBMIT_PASSES {
            let progressed = self.enter();
            let mut out = Deliveries::default();
            let mut st = self.lock();
            self.reap_locked(&mut st, &mut out);
            // SAFETY: the state lock is held, and it is the only place a submission queue is
            // made, so no other `SubmissionQueue` exists.
            let more = progressed && !unsafe { self.uring.submission_shared() }.is_empty();
            let last = !more || pass == SUBMIT_PASSES;
            if last {
                // What the kernel refused stays queued for the reaper's next enter.
                st.submitting = false;
            }
            drop(st);
            out.deliver(self);
            if last {
                if more {
                    self.enter();
                }
                return;
            }
        }
    }

    /// Submits whatever is queued; returns whether the kernel took any of it. Errors the kernel
    /// may return under pressure are retried; the entries stay queued for the next
    /// `io_uring_enter` (the reaper's included), so an operation is never lost.
    pub(super) fn enter(&self) -> bool {
        loop {
            match self.uring.submitter().submit() {
                Ok(n) => {
                    self.counters.enters.fetch_add(1, Ordering::Relaxed);
                    self.counters.sqes.fetch_add(n as u64, Ordering::Relaxed);
                    return n > 0;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if retryable(&e) => {
                    // The completion queue is backed up: reap, then let the reaper's enter
                    // submit what is left.
                    self.reap_and_deliver();
                    self.ensure_reaper();
                    return false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "io_uring_enter failed; the reaper will retry");
                    self.ensure_reaper();
                    return false;
                }
            }
        }
    }

    /// Makes sure the reaper is waiting in the kernel if anything is outstanding.
    pub(super) fn ensure_reaper(&self) {
        let mut st = self.lock();
        if st.unreaped > 0 && st.reaper_parked {
            st.reaper_parked = false;
            drop(st);
            self.reaper_wake.notify_one();
        }
    }
}

pub(super) fn retryable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN))
}
