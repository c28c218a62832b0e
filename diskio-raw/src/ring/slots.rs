//! The table of operations in flight: what each keeps alive for the kernel, and the recording
//! of completions.

use std::ffi::CString;
use std::sync::Arc;
use std::task::Waker;

use diskio::AlignedBuf;
use diskio::backend::OpTimer;
use io_uring::cqueue;

use super::{CHAIN_MAX, Ring, WAKE};
use crate::files::OpenFile;

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
    pub(super) fn abandon(self, results: &[i32]) {
        if let (Keep::Path { .. }, Some(&fd)) = (&self, results.first()) {
            if fd >= 0 {
                close_orphan(fd);
            }
        }
    }
}

/// An operation's timer, carried by its slot: the caller takes it back with the results, and if
/// the caller is gone (its future dropped), whoever reaps the last completion finishes it from
/// the kernel's result, so a dropped operation is counted with the outcome it had.
pub(crate) struct Timed {
    timer: OpTimer,
    /// The SQE whose result finishes it.
    sqe: usize,
    /// A positive result is a byte count (reads and writes); otherwise the operation moves none.
    bytes: bool,
}

impl Timed {
    /// A timer finished from SQE `sqe`'s result, a byte count.
    pub(crate) fn bytes(timer: OpTimer, sqe: usize) -> Self {
        Self {
            timer,
            sqe,
            bytes: true,
        }
    }

    /// A timer finished from SQE `sqe`'s result, moving no bytes.
    pub(crate) fn plain(timer: OpTimer, sqe: usize) -> Self {
        Self {
            timer,
            sqe,
            bytes: false,
        }
    }

    /// The timer, for the caller to finish.
    pub(crate) fn into_timer(self) -> OpTimer {
        self.timer
    }

    /// Finishes the timer of an operation whose caller is gone.
    fn abandoned(self, results: &[i32; CHAIN_MAX]) {
        match results.get(self.sqe) {
            Some(&r) if r >= 0 => self.timer.ok(if self.bytes { r as u64 } else { 0 }),
            _ => self.timer.err(),
        }
    }
}

/// The timers an operation's slot carries (one per SQE at most).
pub(crate) type Timers = [Option<Timed>; CHAIN_MAX];

/// Closes a descriptor that an open made after its caller left.
pub(super) fn close_orphan(fd: i32) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: the kernel just returned `fd` for an open whose caller is gone; nothing else in
    // the process owns it, so taking ownership (and closing it on drop) is sound.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// One operation in flight.
pub(super) struct Slot {
    /// Completions still expected (0 when done).
    pub(super) pending: u8,
    /// Submitted SQEs (and permits held).
    pub(super) sqes: u8,
    pub(super) results: [i32; CHAIN_MAX],
    pub(super) waker: Option<Waker>,
    pub(super) abandoned: bool,
    pub(super) keep: Option<Keep>,
    pub(super) timers: Timers,
}

pub(super) struct State {
    pub(super) slots: Vec<Option<Slot>>,
    pub(super) free: Vec<u32>,
    /// SQEs pushed whose completion has not been reaped.
    pub(super) unreaped: usize,
    pub(super) reaper_parked: bool,
    /// A caller is submitting the queue ([`Ring::submit_queued`]): callers that push
    /// meanwhile leave their entries to it.
    pub(super) submitting: bool,
    pub(super) shutdown: bool,
}

/// Completions collected under the lock, delivered after it is released.
#[derive(Default)]
pub(super) struct Deliveries {
    pub(super) wakers: Vec<Waker>,
    pub(super) abandoned: Vec<(Keep, [i32; CHAIN_MAX], Timers)>,
    pub(super) permits: usize,
}

impl Deliveries {
    pub(super) fn deliver(self, ring: &Ring) {
        if self.permits > 0 {
            ring.permits.add_permits(self.permits);
        }
        for (keep, results, timers) in self.abandoned {
            keep.abandon(&results);
            for timed in timers.into_iter().flatten() {
                timed.abandoned(&results);
            }
        }
        for waker in self.wakers {
            waker.wake();
        }
    }
}

pub(super) fn user_data(index: u32, k: usize) -> u64 {
    (u64::from(index) << 8) | k as u64
}

pub(super) fn alloc_slot(st: &mut State, n: usize, keep: Keep, timers: Timers) -> u32 {
    let slot = Slot {
        pending: n as u8,
        sqes: n as u8,
        results: [0; CHAIN_MAX],
        waker: None,
        abandoned: false,
        keep: Some(keep),
        timers,
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

pub(super) fn slot_mut(st: &mut State, index: u32) -> Option<&mut Slot> {
    st.slots.get_mut(index as usize).and_then(Option::as_mut)
}

pub(super) fn free_slot(st: &mut State, index: u32) -> Option<Slot> {
    let slot = st.slots.get_mut(index as usize).and_then(Option::take);
    if slot.is_some() {
        st.free.push(index);
    }
    slot
}

/// Records one completion.
pub(super) fn complete(st: &mut State, cqe: &cqueue::Entry, out: &mut Deliveries) {
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
                out.abandoned.push((keep, slot.results, slot.timers));
            }
        }
    } else if let Some(w) = slot.waker.take() {
        out.wakers.push(w);
    }
}
