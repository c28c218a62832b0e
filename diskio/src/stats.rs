//! Counters and latency histograms that every backend fills the same way.
//!
//! A backend calls [`Stats::start`] when an operation is accepted (before any queueing) and
//! finishes the returned [`OpTimer`] when the operation's result is known, so latencies include
//! queueing and are comparable across backends. An operation whose caller dropped its future is
//! still counted when the backend finishes it, with the outcome the backend gave it (a write
//! that reached the file is a success with its bytes); one dropped before the backend took it
//! (still waiting for room in a queue) never ran and counts as an error. The shipped backends
//! keep the clock with the operation, not in the caller's future, for this: `diskio-raw` in
//! the ring's slot, `diskio-uring` in the job's reply, `diskio-blocking` in the job.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::Op;

/// The operations that have their own counters, in report order. A `write_sync_at` counts as a
/// `writev` and a `sync`.
pub const COUNTED_OPS: [Op; 9] = [
    Op::Read,
    Op::Write,
    Op::Writev,
    Op::Sync,
    Op::Preallocate,
    Op::SetLen,
    Op::FileLen,
    Op::Open,
    Op::Close,
];

const LATENCY_NS_MAX: u64 = 600_000_000_000;

fn slot(op: Op) -> Option<usize> {
    COUNTED_OPS.iter().position(|&o| o == op)
}

/// Shared, thread-safe counters for one backend. Cloning gives another handle to the same
/// counters.
#[derive(Clone)]
pub struct Stats {
    inner: Arc<[OpCounters; COUNTED_OPS.len()]>,
}

struct OpCounters {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    latency_ns: Mutex<Histogram<u64>>,
}

impl OpCounters {
    fn new() -> Self {
        // Two significant digits between 1 ns and 10 minutes: a few KiB per histogram.
        #[allow(clippy::expect_used)] // constant, valid bounds: no input can make this fail
        let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 2)
            .expect("1 ns..10 min with 2 significant digits is a valid histogram");
        Self {
            ops: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            latency_ns: Mutex::new(histogram),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(std::array::from_fn(|_| OpCounters::new())),
        }
    }

    /// Counts an operation as in flight and starts its clock.
    pub fn start(&self, op: Op) -> OpTimer {
        if let Some(i) = slot(op) {
            self.inner[i].in_flight.fetch_add(1, Ordering::Relaxed);
        }
        OpTimer {
            stats: self.clone(),
            op,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&self, op: Op, started: Instant, end: Instant, bytes: Option<u64>) {
        let Some(i) = slot(op) else { return };
        let c = &self.inner[i];
        let elapsed = end.saturating_duration_since(started);
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        c.ops.fetch_add(1, Ordering::Relaxed);
        match bytes {
            Some(n) => {
                c.bytes.fetch_add(n, Ordering::Relaxed);
            }
            None => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let mut h = c.latency_ns.lock().unwrap_or_else(PoisonError::into_inner);
        h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
    }

    /// A copy of all counters and histograms at this moment.
    pub fn snapshot(&self) -> StatsSnapshot {
        let ops = COUNTED_OPS
            .iter()
            .zip(self.inner.iter())
            .map(|(&op, c)| OpStats {
                op,
                ops: c.ops.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                in_flight: c.in_flight.load(Ordering::Relaxed),
                latency_ns: c
                    .latency_ns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            })
            .collect();
        StatsSnapshot { ops }
    }

    /// Sets every counter and histogram back to zero (in-flight counts are kept).
    pub fn reset(&self) {
        for c in self.inner.iter() {
            c.ops.store(0, Ordering::Relaxed);
            c.bytes.store(0, Ordering::Relaxed);
            c.errors.store(0, Ordering::Relaxed);
            c.latency_ns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reset();
        }
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

/// One operation's clock, from [`Stats::start`]. Finish it with [`ok`](Self::ok) or
/// [`err`](Self::err); dropping it unfinished counts the operation as an error.
#[must_use = "finish the timer with ok() or err()"]
#[derive(Debug)]
pub struct OpTimer {
    stats: Stats,
    op: Op,
    started: Instant,
    done: bool,
}

impl OpTimer {
    /// The operation succeeded, moving `bytes` bytes.
    pub fn ok(self, bytes: u64) {
        self.ok_at(bytes, Instant::now());
    }

    /// The operation failed.
    pub fn err(self) {
        self.err_at(Instant::now());
    }

    /// The operation succeeded at `end`, moving `bytes` bytes: for finishing a timer and its
    /// [`sibling`](Self::sibling) with one clock read.
    pub fn ok_at(mut self, bytes: u64, end: Instant) {
        self.done = true;
        self.stats.finish(self.op, self.started, end, Some(bytes));
    }

    /// The operation failed at `end`.
    pub fn err_at(mut self, end: Instant) {
        self.done = true;
        self.stats.finish(self.op, self.started, end, None);
    }

    /// Finishes a `write_sync_at`'s write timer and its sync's [`sibling`](Self::sibling) with
    /// one clock read, from the result of the whole (`Ok` means written and synced).
    pub fn finish_with_sync<T>(
        self,
        sync: OpTimer,
        result: &crate::Result<T>,
        bytes: impl FnOnce(&T) -> u64,
    ) {
        let end = Instant::now();
        match result {
            Ok(v) => {
                self.ok_at(bytes(v), end);
                sync.ok_at(0, end);
            }
            Err(_) => {
                self.err_at(end);
                sync.err_at(end);
            }
        }
    }

    /// A timer for `op`, counted in flight from now, started when this one was: the sync of a
    /// `write_sync_at`, which goes down with its write, needs no clock read of its own. A
    /// clock read costs tens of ns in a VM, a noticeable part of a commit on a fast device.
    pub fn sibling(&self, op: Op) -> OpTimer {
        if let Some(i) = slot(op) {
            self.stats.inner[i]
                .in_flight
                .fetch_add(1, Ordering::Relaxed);
        }
        OpTimer {
            stats: self.stats.clone(),
            op,
            started: self.started,
            done: false,
        }
    }

    /// Finishes from a result: `Ok(bytes)` or an error.
    pub fn finish<T>(self, result: &crate::Result<T>, bytes: impl FnOnce(&T) -> u64) {
        match result {
            Ok(v) => self.ok(bytes(v)),
            Err(_) => self.err(),
        }
    }

    /// Forgets the operation: it leaves the in-flight count without being counted (a backend
    /// that hands the operation over to other counted operations, such as a write-then-sync
    /// done as a write and a sync).
    pub fn discard(mut self) {
        self.done = true;
        if let Some(i) = slot(self.op) {
            self.stats.inner[i]
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Time since the operation started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if !self.done {
            self.stats
                .finish(self.op, self.started, Instant::now(), None);
        }
    }
}

/// Counters of every operation kind at one moment.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    /// One entry per kind, in [`COUNTED_OPS`](crate::backend::COUNTED_OPS) order.
    pub ops: Vec<OpStats>,
}

impl StatsSnapshot {
    /// The counters of one operation kind (all zero for kinds that are not counted).
    pub fn op(&self, op: Op) -> OpStats {
        self.ops
            .iter()
            .find(|s| s.op == op)
            .cloned()
            .unwrap_or_else(|| OpStats::zero(op))
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in self.ops.iter().filter(|s| s.ops > 0 || s.in_flight > 0) {
            writeln!(f, "{s}")?;
        }
        Ok(())
    }
}

/// Counters of one operation kind.
#[derive(Clone)]
pub struct OpStats {
    /// The operation kind.
    pub op: Op,
    /// Operations finished (successes and errors).
    pub ops: u64,
    /// Bytes moved by successful operations.
    pub bytes: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Operations accepted and not finished yet (queued or running).
    pub in_flight: u64,
    /// Latency from acceptance to completion, in nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl OpStats {
    fn zero(op: Op) -> Self {
        Self {
            op,
            ops: 0,
            bytes: 0,
            errors: 0,
            in_flight: 0,
            latency_ns: OpCounters::new()
                .latency_ns
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl fmt::Debug for OpStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpStats")
            .field("op", &self.op)
            .field("ops", &self.ops)
            .field("bytes", &self.bytes)
            .field("errors", &self.errors)
            .field("in_flight", &self.in_flight)
            .field("p50_ns", &self.latency_ns.value_at_quantile(0.5))
            .finish()
    }
}

impl fmt::Display for OpStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |q: f64| self.latency_ns.value_at_quantile(q) as f64 / 1000.0;
        write!(
            f,
            "{:<12} {:>10} ops {:>14} bytes {:>6} errors {:>4} in flight  p50 {:>9.1} us  p99 {:>9.1} us",
            self.op.name(),
            self.ops,
            self.bytes,
            self.errors,
            self.in_flight,
            us(0.5),
            us(0.99)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_successes_errors_and_abandoned_timers() {
        let stats = Stats::new();
        let t = stats.start(Op::Read);
        assert_eq!(stats.snapshot().op(Op::Read).in_flight, 1);
        t.ok(4096);
        stats.start(Op::Read).err();
        drop(stats.start(Op::Read));
        let s = stats.snapshot().op(Op::Read);
        assert_eq!((s.ops, s.bytes, s.errors, s.in_flight), (3, 4096, 2, 0));
        assert_eq!(s.latency_ns.len(), 3);
        stats.reset();
        assert_eq!(stats.snapshot().op(Op::Read).ops, 0);
    }

    #[test]
    fn a_sibling_shares_its_timers_clock_and_finishes_with_it() {
        let stats = Stats::new();
        let write = stats.start(Op::Writev);
        let sync = write.sibling(Op::Sync);
        assert_eq!(stats.snapshot().op(Op::Sync).in_flight, 1);
        std::thread::sleep(Duration::from_millis(2));
        write.finish_with_sync(sync, &Ok::<usize, crate::Error>(512), |&n| n as u64);
        let snap = stats.snapshot();
        let (w, s) = (snap.op(Op::Writev), snap.op(Op::Sync));
        assert_eq!((w.ops, w.bytes, w.in_flight), (1, 512, 0));
        assert_eq!((s.ops, s.bytes, s.errors, s.in_flight), (1, 0, 0, 0));
        assert!(
            s.latency_ns.min() >= 2_000_000,
            "the sibling's clock started with its timer's"
        );
        assert_eq!(
            w.latency_ns.max(),
            s.latency_ns.max(),
            "one clock read ends both"
        );

        let write = stats.start(Op::Writev);
        let sync = write.sibling(Op::Sync);
        let failed = Err::<usize, _>(crate::Error::Unsupported {
            reason: "test".to_owned(),
        });
        write.finish_with_sync(sync, &failed, |&n| n as u64);
        let snap = stats.snapshot();
        assert_eq!(snap.op(Op::Writev).errors, 1);
        assert_eq!(snap.op(Op::Sync).errors, 1);
    }
}
