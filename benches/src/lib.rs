//! Benchmark engines shared by `diskio-bench` and the criterion benches.
//!
//! Every engine runs the same [`Workload`] for a fixed time and returns a [`Sample`] (operations,
//! bytes, latency histogram). The reference engines are plain threads calling `pread`/`pwrite`
//! directly, fio (when installed) and `tokio::fs`; the diskio engines go through the
//! [`diskio::DiskIo`] trait.

#![forbid(unsafe_code)]

pub mod cpu;
pub mod engines;
pub mod fio;
#[cfg(feature = "peers")]
pub mod peers;
pub mod plot;
pub mod report;
pub mod scratch;
pub mod tokio_uring_ref;
pub mod wal_bench;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What one measurement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Reads of `block` bytes at random `block`-aligned offsets.
    RandomRead,
    /// Writes of `block` bytes at increasing offsets, wrapping at the end of the file.
    SequentialWrite,
    /// A write of `block` bytes followed by `fdatasync`, at increasing offsets.
    WriteSync,
}

/// A workload: the pattern, the sizes, how many operations are in flight, and the file mode.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Name shown in the report.
    pub name: &'static str,
    /// Access pattern.
    pub pattern: Pattern,
    /// Bytes per operation.
    pub block: usize,
    /// Operations in flight (threads for the reference, tasks for async engines).
    pub depth: usize,
    /// `O_DIRECT`.
    pub direct: bool,
    /// Size of the file the workload runs on.
    pub file_bytes: u64,
    /// How long one measurement runs.
    pub duration: Duration,
}

/// The result of one measurement.
#[derive(Clone)]
pub struct Sample {
    /// Operations completed.
    pub ops: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// Per-operation latency in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// CPU time of the whole process during the measurement window, where it was measured.
    pub cpu: Option<cpu::CpuTime>,
}

impl Sample {
    /// An empty sample to merge workers' samples into.
    pub fn empty() -> Self {
        Self {
            ops: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            latency_ns: new_histogram(),
            cpu: None,
        }
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &Sample) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.elapsed = self.elapsed.max(other.elapsed);
        let _ = self.latency_ns.add(&other.latency_ns);
        self.cpu = self.cpu.or(other.cpu);
    }

    /// Counts one operation that ran from `begin` to `end`, unless it began before
    /// `counting_from` (the warm-up).
    pub fn record(&mut self, begin: Instant, end: Instant, counting_from: Instant, bytes: u64) {
        if begin >= counting_from {
            self.ops += 1;
            self.bytes += bytes;
            let ns = u64::try_from((end - begin).as_nanos()).unwrap_or(u64::MAX);
            let _ = self.latency_ns.record(ns.max(1));
        }
    }

    /// Operations per second.
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// MiB per second.
    pub fn mib_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q`, in microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        self.latency_ns.value_at_quantile(q) as f64 / 1000.0
    }

    /// Mean latency in microseconds.
    pub fn mean_us(&self) -> f64 {
        self.latency_ns.mean() / 1000.0
    }

    /// CPU time of the process (user + system) per operation counted, in microseconds (`NaN`
    /// if not measured).
    pub fn cpu_us_per_op(&self) -> f64 {
        self.per_op(self.cpu.map(|c| c.total()))
    }

    /// User CPU time of the process per operation counted, in microseconds (`NaN` if not
    /// measured): the part spent in the engine's own code rather than in the kernel.
    pub fn user_cpu_us_per_op(&self) -> f64 {
        self.per_op(self.cpu.map(|c| c.user))
    }

    fn per_op(&self, time: Option<Duration>) -> f64 {
        match time {
            Some(t) if self.ops > 0 => t.as_secs_f64() * 1e6 / self.ops as f64,
            _ => f64::NAN,
        }
    }
}

/// A latency histogram: 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// A small seeded generator for offsets (SplitMix64).
#[derive(Debug, Clone)]
pub struct Offsets {
    state: u64,
    blocks: u64,
    block: u64,
}

impl Offsets {
    /// Offsets of `block`-sized blocks in a file of `file_bytes`, from `seed`.
    pub fn new(seed: u64, file_bytes: u64, block: usize) -> Self {
        let block = block as u64;
        Self {
            state: seed,
            blocks: (file_bytes / block).max(1),
            block,
        }
    }

    /// A random block-aligned offset.
    pub fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (((u128::from(z) * u128::from(self.blocks)) >> 64) as u64) * self.block
    }

    /// The offset of the `n`th block of a sequential pass (wrapping).
    pub fn sequential(&self, n: u64) -> u64 {
        (n % self.blocks) * self.block
    }
}
