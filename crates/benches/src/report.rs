//! Medians of several runs, and the table that `diskio-bench` prints.

use std::fmt::Write as _;

use crate::engines::Engine;
use crate::{Sample, Workload};

/// All runs of one engine on one workload.
pub struct EngineRuns {
    /// The engine.
    pub engine: Engine,
    /// One sample per run, or the error that stopped the engine.
    pub runs: Result<Vec<Sample>, String>,
}

/// The figures of one engine: medians over its runs.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Median operations per second.
    pub iops: f64,
    /// Median MiB per second.
    pub mib_s: f64,
    /// Median of the runs' p50 latencies, µs.
    pub p50_us: f64,
    /// Median of the runs' p99 latencies, µs.
    pub p99_us: f64,
    /// Median of the runs' mean latencies, µs.
    pub mean_us: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Figures {
    /// Medians over `runs`.
    pub fn of(runs: &[Sample]) -> Self {
        let m = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
        Self {
            iops: m(Sample::iops),
            mib_s: m(Sample::mib_s),
            p50_us: m(|s| s.latency_us(0.5)),
            p99_us: m(|s| s.latency_us(0.99)),
            mean_us: m(Sample::mean_us),
        }
    }
}

/// One workload's results, the first engine being the reference.
pub struct WorkloadResult {
    /// The workload.
    pub workload: Workload,
    /// One entry per engine; the first is the reference.
    pub engines: Vec<EngineRuns>,
}

impl WorkloadResult {
    /// Figures of an engine, if it ran.
    pub fn figures(&self, engine: Engine) -> Option<Figures> {
        self.engines
            .iter()
            .find(|e| e.engine == engine)
            .and_then(|e| e.runs.as_ref().ok())
            .map(|runs| Figures::of(runs))
    }
}

/// Renders the table: per workload, per engine, the median figures and the ratio of IOPS (and of
/// p50 latency, at queue depth 1) to the reference engine measured in the same run.
pub fn table(results: &[WorkloadResult], runs: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<22} {:>10} {:>9} {:>9} {:>9} {:>9}  vs reference",
        "workload", "engine", "IOPS", "MiB/s", "p50 us", "p99 us", "mean us"
    );
    let _ = writeln!(out, "{}", "-".repeat(130));
    for r in results {
        let reference = r
            .engines
            .first()
            .and_then(|e| e.runs.as_ref().ok())
            .map(|s| Figures::of(s));
        for (i, e) in r.engines.iter().enumerate() {
            let label = if i == 0 { r.workload.name } else { "" };
            match &e.runs {
                Ok(samples) => {
                    let f = Figures::of(samples);
                    let ratio = match (i, reference) {
                        (0, _) => "reference".to_owned(),
                        (_, Some(rf)) if r.workload.depth == 1 => format!(
                            "{:.2}x IOPS, {:.2}x p50 latency",
                            f.iops / rf.iops,
                            f.p50_us / rf.p50_us
                        ),
                        (_, Some(rf)) => format!("{:.2}x IOPS", f.iops / rf.iops),
                        (_, None) => "n/a (reference failed)".to_owned(),
                    };
                    let _ = writeln!(
                        out,
                        "{label:<40} {:<22} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {ratio}",
                        e.engine.name(),
                        f.iops,
                        f.mib_s,
                        f.p50_us,
                        f.p99_us,
                        f.mean_us
                    );
                }
                Err(msg) => {
                    let _ = writeln!(out, "{label:<40} {:<22} cannot run: {msg}", e.engine.name());
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\nmedians of {runs} run(s) per engine, engines alternated within each run"
    );
    out
}
