//! Medians of several runs, and the table that `diskio-bench` prints.

use std::fmt::Write as _;

use crate::engines::Engine;
use crate::{Sample, Workload};

/// All runs of one engine on one workload.
pub struct EngineRuns {
    /// The engine.
    pub engine: Engine,
    /// The figures of each run, or the error that stopped the engine.
    pub runs: Result<Vec<Figures>, String>,
}

/// The figures of one run, or of one engine as medians over its runs. A figure an engine cannot
/// report is `NaN` and printed as `-`.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Operations per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// p50 latency, µs.
    pub p50_us: f64,
    /// p99 latency, µs.
    pub p99_us: f64,
    /// p99.9 latency, µs.
    pub p999_us: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// CPU time of the whole process per operation, µs (`NaN` where not measured).
    pub cpu_us_per_op: f64,
    /// The user part of [`cpu_us_per_op`](Self::cpu_us_per_op), µs.
    pub user_cpu_us_per_op: f64,
    /// Latency at each of [`CURVE`], µs: the distribution, for plots.
    pub curve_us: [f64; CURVE.len()],
}

/// The quantiles of [`Figures::curve_us`].
pub const CURVE: [f64; 11] = [
    0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999,
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Figures {
    /// The figures of one measured run.
    pub fn of_sample(s: &Sample) -> Self {
        Self {
            iops: s.iops(),
            mib_s: s.mib_s(),
            p50_us: s.latency_us(0.5),
            p99_us: s.latency_us(0.99),
            p999_us: s.latency_us(0.999),
            mean_us: s.mean_us(),
            cpu_us_per_op: s.cpu_us_per_op(),
            user_cpu_us_per_op: s.user_cpu_us_per_op(),
            curve_us: CURVE.map(|q| s.latency_us(q)),
        }
    }

    /// Medians over `runs`, figure by figure.
    pub fn median(runs: &[Figures]) -> Self {
        let m = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
        Self {
            iops: m(|f| f.iops),
            mib_s: m(|f| f.mib_s),
            p50_us: m(|f| f.p50_us),
            p99_us: m(|f| f.p99_us),
            p999_us: m(|f| f.p999_us),
            mean_us: m(|f| f.mean_us),
            cpu_us_per_op: m(|f| f.cpu_us_per_op),
            user_cpu_us_per_op: m(|f| f.user_cpu_us_per_op),
            curve_us: std::array::from_fn(|i| median(runs.iter().map(|f| f.curve_us[i]).collect())),
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
            .map(|runs| Figures::median(runs))
    }
}

/// The figures as JSON (`null` for a figure the engine cannot report).
pub fn figures_json(f: &Figures) -> serde_json::Value {
    serde_json::json!({
        "ops_s": f.iops,
        "mib_s": f.mib_s,
        "p50_us": f.p50_us,
        "p99_us": f.p99_us,
        "p999_us": f.p999_us,
        "mean_us": f.mean_us,
        "cpu_us_per_op": f.cpu_us_per_op,
        "user_cpu_us_per_op": f.user_cpu_us_per_op,
        "latency_us_at": CURVE
            .iter()
            .zip(f.curve_us)
            .map(|(q, us)| serde_json::json!({ "quantile": q, "us": us }))
            .collect::<Vec<_>>(),
    })
}

/// One JSON row per workload and engine of the I/O table: the median figures, or the error
/// that stopped the engine.
pub fn io_json(results: &[WorkloadResult]) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for r in results {
        for e in &r.engines {
            let figures = match &e.runs {
                Ok(runs) => figures_json(&Figures::median(runs)),
                Err(msg) => serde_json::json!({ "error": msg }),
            };
            rows.push(serde_json::json!({
                "table": "io",
                "workload": r.workload.name,
                "engine": e.engine.name(),
                "figures": figures,
            }));
        }
    }
    rows
}

/// Renders the table: per workload, per engine, the median figures and the ratios of IOPS (and
/// of p50 latency, at queue depth 1) to the reference engines measured in the same run: plain
/// threads, and fio when it ran.
pub fn table(results: &[WorkloadResult], runs: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<38} {:<22} {:>9} {:>8} {:>8} {:>8} {:>8}  vs threads | vs fio",
        "workload", "engine", "IOPS", "MiB/s", "p50 us", "p99 us", "mean us"
    );
    let _ = writeln!(out, "{}", "-".repeat(150));
    for r in results {
        let threads = r.figures(Engine::Threads);
        let fio = r.figures(Engine::Fio);
        for (i, e) in r.engines.iter().enumerate() {
            let label = if i == 0 { r.workload.name } else { "" };
            match &e.runs {
                Ok(runs) => {
                    let f = Figures::median(runs);
                    let vs = |reference: Option<Figures>, me: Engine| match reference {
                        _ if e.engine == me => "reference".to_owned(),
                        Some(rf) => ratio(&f, &rf, r.workload.depth == 1),
                        None => "-".to_owned(),
                    };
                    let _ = writeln!(
                        out,
                        "{label:<38} {:<22} {:>9.0} {:>8.1} {:>8} {:>8} {:>8}  {} | {}",
                        e.engine.name(),
                        f.iops,
                        f.mib_s,
                        us(f.p50_us),
                        us(f.p99_us),
                        us(f.mean_us),
                        vs(threads, Engine::Threads),
                        vs(fio, Engine::Fio),
                    );
                }
                Err(msg) => {
                    let _ = writeln!(out, "{label:<38} {:<22} cannot run: {msg}", e.engine.name());
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\nmedians of {runs} run(s) per engine, engines alternated within each run; \
         '-' where a figure is not available"
    );
    out
}

fn us(v: f64) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else {
        format!("{v:.1}")
    }
}

/// `1.02x` of IOPS, and at queue depth 1 also the ratio of p50 latencies (lower is better).
fn ratio(f: &Figures, reference: &Figures, depth_one: bool) -> String {
    let iops = format!("{:.2}x IOPS", f.iops / reference.iops);
    let p50 = f.p50_us / reference.p50_us;
    if depth_one && !p50.is_nan() {
        format!("{iops}, {p50:.2}x p50")
    } else {
        iops
    }
}
