//! What the log counts: appends, groups, bytes, syncs, and the distributions of group size,
//! commit latency and sync latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;

/// The log's counters, updated by appenders and the committer.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) groups: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) fills_cut: AtomicU64,
    /// Updated by the committer, once per group or sync.
    histograms: Mutex<Histograms>,
}

/// Distributions the committer records.
struct Histograms {
    /// Records per group.
    group_records: Histogram<u64>,
    /// Nanoseconds from the oldest record of a group being queued to the group being done
    /// (durable in `Sync`, written in `None`): the worst wait of that group's appenders.
    commit_ns: Histogram<u64>,
    /// Nanoseconds per sync (a group's write + sync, or a lone sync).
    sync_ns: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            group_records: histogram(),
            commit_ns: histogram(),
            sync_ns: histogram(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant bounds, valid: nothing a user or the OS can change
    Histogram::new_with_bounds(1, 1 << 40, 2).expect("valid histogram bounds")
}

impl Counters {
    fn histograms(&self) -> MutexGuard<'_, Histograms> {
        self.histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A group of `records` records written (`bytes` bytes) and done at `done`, whose oldest
    /// record was queued at `since`; `synced_from` is when its write + sync started, if it was
    /// synced (`Sync` mode). One clock read and one lock serve all of it.
    pub(crate) fn note_group(
        &self,
        records: u64,
        bytes: u64,
        since: Option<Instant>,
        done: Instant,
        synced_from: Option<Instant>,
    ) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        if synced_from.is_some() {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut h = self.histograms();
        let _ = h.group_records.record(records.max(1));
        if let Some(since) = since {
            let _ = h.commit_ns.record(nanos(since, done).max(1));
        }
        if let Some(started) = synced_from {
            let _ = h.sync_ns.record(nanos(started, done).max(1));
        }
    }

    /// A sync of the log's data, started at `started`, done at `done`.
    pub(crate) fn note_sync(&self, started: Instant, done: Instant) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .histograms()
            .sync_ns
            .record(nanos(started, done).max(1));
    }

    /// Everything, as of now.
    pub(crate) fn snapshot(&self) -> WalStats {
        let h = self.histograms();
        WalStats {
            appends: self.appends.load(Ordering::Relaxed),
            groups: self.groups.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            rotations: self.rotations.load(Ordering::Relaxed),
            fills_cut: self.fills_cut.load(Ordering::Relaxed),
            group_records: Summary::of(&h.group_records, 1.0),
            commit_us: Summary::of(&h.commit_ns, 1000.0),
            sync_us: Summary::of(&h.sync_ns, 1000.0),
        }
    }
}

fn nanos(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_nanos()).unwrap_or(u64::MAX)
}

/// Counters and distributions of a [`Wal`](crate::Wal) since it was opened
/// ([`Wal::stats`](crate::Wal::stats)).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WalStats {
    /// Records appended.
    pub appends: u64,
    /// Groups written (one write, and in `Sync` one sync, each).
    pub groups: u64,
    /// Bytes written in groups (frames, headers included).
    pub bytes_written: u64,
    /// Syncs of the log's data (a group's write + sync counts once).
    pub syncs: u64,
    /// Segments started after the first.
    pub rotations: u64,
    /// Segments whose zero-fill rotation cut short (the log caught up with the fill): their
    /// rest was preallocated instead. Often nonzero means the disk cannot write the log and
    /// the zeros of the next segment at the log's rate; larger segments give the fill longer.
    pub fills_cut: u64,
    /// Records per group.
    pub group_records: Summary,
    /// Per group, µs from its oldest record being queued to the group being done (durable in
    /// `Sync`): the longest wait of that group's appenders.
    pub commit_us: Summary,
    /// Per sync (a group's write + sync in `Sync` mode), µs.
    pub sync_us: Summary,
}

impl WalStats {
    /// Records per group, on average: how much group commit saved.
    pub fn records_per_group(&self) -> f64 {
        if self.groups == 0 {
            0.0
        } else {
            self.appends as f64 / self.groups as f64
        }
    }
}

/// A distribution in brief.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    pub(crate) fn of(h: &hdrhistogram::Histogram<u64>, unit: f64) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: h.mean() / unit,
            p50: h.value_at_quantile(0.5) as f64 / unit,
            p99: h.value_at_quantile(0.99) as f64 / unit,
            max: h.max() as f64 / unit,
        }
    }
}
