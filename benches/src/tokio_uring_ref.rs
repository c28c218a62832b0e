//! tokio's own io_uring file I/O as a reference engine: the `tokio-uring-ref` binary (a project
//! of its own under `benches/tokio-uring-ref`, outside the workspace), built on first use with
//! `RUSTFLAGS="--cfg tokio_unstable"` into `target/tokio-uring-ref`, so the unstable cfg never
//! reaches diskio's crates, and run like fio. `DISKIO_BENCH_TOKIO_URING_REF` names a binary
//! built elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::report::{CURVE, Figures};
use crate::{Pattern, Workload};

/// The reference binary, built once per process, or why there is none.
fn binary() -> Result<&'static Path, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("DISKIO_BENCH_TOKIO_URING_REF") {
                return Ok(PathBuf::from(p));
            }
            let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokio-uring-ref");
            let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tokio-uring-ref");
            if !project.join("Cargo.toml").exists() {
                return Err(format!(
                    "{} is not here (not run from a checkout)",
                    project.display()
                ));
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "--release", "--quiet", "--manifest-path"])
                .arg(project.join("Cargo.toml"))
                .env("RUSTFLAGS", "--cfg tokio_unstable")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env("CARGO_TARGET_DIR", &target)
                .output()
                .map_err(|e| format!("cannot run cargo to build it: {e}"))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                return Err(format!("building it failed: {last}"));
            }
            Ok(target.join("release/tokio-uring-ref"))
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// Runs `w` on tokio's io_uring `tokio::fs`.
///
/// # Errors
///
/// Why the binary cannot be built or run, or its own error (e.g. `EINVAL` with `O_DIRECT`:
/// `tokio::fs` reads into its own unaligned buffer).
pub fn run(w: &Workload, path: &Path, warmup: Duration) -> Result<Figures, String> {
    let bin = binary()?;
    let pattern = match w.pattern {
        Pattern::RandomRead => "randread",
        Pattern::SequentialWrite => "seqwrite",
        Pattern::WriteSync => "writesync",
    };
    let mut quantiles = vec![0.5, 0.99, 0.999];
    quantiles.extend(CURVE);
    let out = Command::new(bin)
        .arg(pattern)
        .arg(w.block.to_string())
        .arg(w.depth.to_string())
        .arg(if w.direct { "1" } else { "0" })
        .arg(path)
        .arg(w.file_bytes.to_string())
        .arg(w.duration.as_millis().to_string())
        .arg(warmup.as_millis().to_string())
        .args(quantiles.iter().map(f64::to_string))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err
            .trim()
            .trim_start_matches("tokio-uring-ref: ")
            .to_owned());
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Figures from the binary's line: ops, bytes, elapsed ns, mean ns, then nanoseconds at p50,
/// p99, p99.9 and each of [`CURVE`].
fn parse(line: &str) -> Result<Figures, String> {
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|s| {
            s.parse::<f64>()
                .map_err(|_| format!("unexpected output {line:?}"))
        })
        .collect::<Result<_, _>>()?;
    if v.len() != 7 + CURVE.len() {
        return Err(format!("unexpected output {line:?}"));
    }
    let secs = v[2] / 1e9;
    let us = |ns: f64| ns / 1000.0;
    Ok(Figures {
        iops: v[0] / secs,
        mib_s: v[1] / secs / f64::from(1 << 20),
        p50_us: us(v[4]),
        p99_us: us(v[5]),
        p999_us: us(v[6]),
        mean_us: us(v[3]),
        cpu_us_per_op: f64::NAN,
        user_cpu_us_per_op: f64::NAN,
        curve_us: std::array::from_fn(|i| us(v[7 + i])),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_line_becomes_figures_and_a_bad_one_an_error() {
        let mut line = "1000 4096000 1000000000 40000 39000 90000 120000".to_owned();
        for i in 0..CURVE.len() {
            line.push_str(&format!(" {}", 1000 * (i + 1)));
        }
        let f = parse(&line).unwrap();
        assert_eq!(f.iops, 1000.0);
        assert_eq!(f.p50_us, 39.0);
        assert_eq!(f.curve_us[0], 1.0);
        assert!(parse("1 2 3").is_err());
        assert!(parse("a b c").is_err());
    }
}
