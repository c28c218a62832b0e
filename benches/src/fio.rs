//! fio as a reference engine: the same workload on the same scratch file, through fio's
//! `io_uring` engine, read back from fio's JSON report.
//!
//! fio is optional. [`version`] says whether it is installed; `diskio-bench` prints how to get it
//! when it is not (`apt-get install -y fio` on Debian and Ubuntu).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::report::Figures;
use crate::{Pattern, Workload};

/// The installed fio's version line, or `None` when fio cannot be run.
pub fn version() -> Option<String> {
    let out = Command::new("fio").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The fio arguments that run `w` on the file at `path`: a warm-up (`ramp_time`) of `warmup`, then
/// `w.duration` measured. The page cache is left alone (`invalidate=0`), so the cached workloads
/// stay cached for the engines that run after fio.
pub fn args(w: &Workload, path: &Path, warmup: Duration) -> Vec<String> {
    let rw = match w.pattern {
        Pattern::RandomRead => "randread",
        Pattern::SequentialWrite | Pattern::WriteSync => "write",
    };
    let mut args = vec![
        "--name=diskio-bench".to_owned(),
        format!("--filename={}", path.display()),
        format!("--size={}", w.file_bytes),
        "--ioengine=io_uring".to_owned(),
        format!("--direct={}", u8::from(w.direct)),
        format!("--rw={rw}"),
        format!("--bs={}", w.block),
        format!("--iodepth={}", w.depth),
        "--time_based".to_owned(),
        format!("--runtime={}ms", w.duration.as_millis().max(1)),
        format!("--ramp_time={}ms", warmup.as_millis()),
        "--invalidate=0".to_owned(),
        "--norandommap".to_owned(),
        "--randrepeat=0".to_owned(),
        "--lat_percentiles=1".to_owned(),
        "--output-format=json".to_owned(),
    ];
    if w.pattern == Pattern::WriteSync {
        args.push("--fdatasync=1".to_owned());
    }
    args
}

/// Runs fio with [`args`] and returns its figures.
///
/// For write + fdatasync, fio times the write and the sync separately, so its per-operation
/// latency percentiles are not comparable and are left out (`NaN`); the mean is derived from the
/// operation rate (one operation in flight).
///
/// # Errors
///
/// A message when fio cannot start, fails, or prints a report this parser does not understand.
pub fn run(w: &Workload, path: &Path, warmup: Duration) -> Result<Figures, String> {
    let out = Command::new("fio")
        .args(args(w, path, warmup))
        .output()
        .map_err(|e| format!("cannot run fio: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("fio failed ({}): {}", out.status, stderr.trim()));
    }
    parse(&stdout, w.pattern)
}

/// The disk's rate for what an unsynced WAL writes, in bytes per second: `block`-byte
/// sequential `O_DIRECT` writes, one in flight, each block once, over `bytes` of a new file
/// that fio preallocates (`fallocate`): unwritten extents, as in a new WAL segment, whose
/// first write also converts them. The file is removed before and after.
///
/// # Errors
///
/// A message when fio cannot start, fails, or prints a report this parser does not understand.
pub fn fresh_write(path: &Path, bytes: u64, block: usize) -> Result<f64, String> {
    let _ = std::fs::remove_file(path);
    let out = Command::new("fio")
        .args([
            "--name=diskio-bench-fresh".to_owned(),
            format!("--filename={}", path.display()),
            format!("--size={bytes}"),
            "--fallocate=native".to_owned(),
            "--ioengine=io_uring".to_owned(),
            "--direct=1".to_owned(),
            "--rw=write".to_owned(),
            format!("--bs={block}"),
            "--iodepth=1".to_owned(),
            "--lat_percentiles=1".to_owned(),
            "--output-format=json".to_owned(),
        ])
        .output();
    let _ = std::fs::remove_file(path);
    let out = out.map_err(|e| format!("cannot run fio: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("fio failed ({}): {}", out.status, stderr.trim()));
    }
    let figures = parse(
        &String::from_utf8_lossy(&out.stdout),
        Pattern::SequentialWrite,
    )?;
    Ok(figures.mib_s * f64::from(1 << 20))
}

/// Reads the figures out of fio's JSON report (`--output-format=json`).
///
/// # Errors
///
/// A message naming the field that is missing.
pub fn parse(report: &str, pattern: Pattern) -> Result<Figures, String> {
    // fio may print notices before the JSON document.
    let json = report
        .find('{')
        .map(|at| &report[at..])
        .ok_or("fio printed no JSON report")?;
    let doc: Value =
        serde_json::from_str(json).map_err(|e| format!("fio's report is not JSON: {e}"))?;
    let job = &doc["jobs"][0];
    if let Some(err) = job["error"].as_i64().filter(|&e| e != 0) {
        return Err(format!("fio reported error {err}"));
    }
    let side = match pattern {
        Pattern::RandomRead => &job["read"],
        Pattern::SequentialWrite | Pattern::WriteSync => &job["write"],
    };
    let number = |v: &Value, what: &str| {
        v.as_f64()
            .ok_or_else(|| format!("fio's report has no {what}"))
    };
    let iops = number(&side["iops"], "iops")?;
    let bw = number(&side["bw_bytes"], "bw_bytes")?;
    if iops <= 0.0 {
        return Err("fio completed no operations".into());
    }
    let (p50_us, p99_us, mean_us) = if pattern == Pattern::WriteSync {
        (f64::NAN, f64::NAN, 1e6 / iops)
    } else {
        let lat = &side["lat_ns"];
        (
            number(&lat["percentile"]["50.000000"], "lat_ns p50")? / 1000.0,
            number(&lat["percentile"]["99.000000"], "lat_ns p99")? / 1000.0,
            number(&lat["mean"], "lat_ns mean")? / 1000.0,
        )
    };
    Ok(Figures {
        iops,
        mib_s: bw / f64::from(1 << 20),
        p50_us,
        p99_us,
        p999_us: f64::NAN,
        mean_us,
        cpu_us_per_op: f64::NAN,
        user_cpu_us_per_op: f64::NAN,
        // fio's report is read for p50 and p99 only.
        curve_us: [f64::NAN; crate::report::CURVE.len()],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const REPORT: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{ "fio version" : "fio-3.33", "jobs" : [ { "jobname" : "diskio-bench", "error" : 0,
  "read" : { "io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.0, "lat_ns" : { "mean" : 0.0 } },
  "write" : { "bw_bytes" : 4194304, "iops" : 1024.0,
    "lat_ns" : { "mean" : 20500.5, "percentile" : { "50.000000" : 20000, "99.000000" : 41000 } } }
} ] }"#;

    #[test]
    fn reads_the_written_side_and_skips_leading_notices() {
        let f = parse(REPORT, Pattern::SequentialWrite).unwrap();
        assert_eq!(f.iops, 1024.0);
        assert_eq!(f.mib_s, 4.0);
        assert_eq!(f.p50_us, 20.0);
        assert_eq!(f.p99_us, 41.0);
        assert_eq!(f.mean_us, 20.5005);
    }

    #[test]
    fn write_sync_has_no_comparable_percentiles() {
        let f = parse(REPORT, Pattern::WriteSync).unwrap();
        assert!(f.p50_us.is_nan() && f.p99_us.is_nan());
        assert!((f.mean_us - 1e6 / 1024.0).abs() < 1e-9);
    }

    #[test]
    fn an_idle_side_or_a_broken_report_is_an_error() {
        assert!(parse(REPORT, Pattern::RandomRead).is_err());
        assert!(parse("fio: command not understood", Pattern::RandomRead).is_err());
        assert!(parse("{\"jobs\": [{\"error\": 5}]}", Pattern::RandomRead).is_err());
    }
}
