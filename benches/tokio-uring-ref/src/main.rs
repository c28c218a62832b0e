//! One I/O workload on `tokio::fs` with tokio's io_uring driver enabled, for diskio-bench.
//!
//! ```text
//! tokio-uring-ref PATTERN BLOCK DEPTH DIRECT PATH FILE_BYTES DURATION_MS WARMUP_MS QUANTILES...
//! ```
//!
//! `PATTERN` is `randread`, `seqwrite` or `writesync`; `DIRECT` is 0 or 1. Prints one line:
//! operations, bytes and nanoseconds measured, the mean latency and the latency at each of
//! `QUANTILES`, in nanoseconds. In tokio 1.54 the io_uring driver serves file reads (and
//! opens); writes and syncs still go to the blocking pool.

use std::io::SeekFrom;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

fn main() {
    if let Err(e) = run() {
        eprintln!("tokio-uring-ref: {e}");
        std::process::exit(1);
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", args[i]))
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pattern: String = arg(&args, 0, "pattern")?;
    let block: usize = arg(&args, 1, "block")?;
    let depth: usize = arg(&args, 2, "depth")?;
    let direct: u8 = arg(&args, 3, "direct")?;
    let path: String = arg(&args, 4, "path")?;
    let file_bytes: u64 = arg(&args, 5, "file bytes")?;
    let duration = Duration::from_millis(arg(&args, 6, "duration")?);
    let warmup = Duration::from_millis(arg(&args, 7, "warmup")?);
    let quantiles: Vec<f64> = (8..args.len()).map(|i| arg(&args, i, "quantile")).collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .enable_io_uring()
        .build()
        .map_err(|e| format!("runtime with io_uring: {e}"))?;
    let next = Arc::new(AtomicU64::new(0));
    let blocks = (file_bytes / block as u64).max(1);
    let (lat, bytes, elapsed) = rt.block_on(async move {
        let start = Instant::now() + Duration::from_millis(20);
        let counting_from = start + warmup;
        let deadline = counting_from + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..depth {
            let (path, pattern, next) = (path.clone(), pattern.clone(), Arc::clone(&next));
            tasks.spawn(async move {
                let mut opts = tokio::fs::OpenOptions::new();
                opts.read(true).write(pattern != "randread");
                if direct == 1 {
                    opts.custom_flags(libc::O_DIRECT);
                }
                let mut file = opts.open(&path).await.map_err(|e| format!("open: {e}"))?;
                let mut buf = vec![1u8; block];
                let mut rng = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut lat = Vec::new();
                let mut bytes = 0u64;
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let begin = Instant::now();
                    if begin >= deadline {
                        break;
                    }
                    match pattern.as_str() {
                        "randread" => {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            let at = (rng % blocks) * block as u64;
                            file.seek(SeekFrom::Start(at)).await.map_err(|e| e.to_string())?;
                            file.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                        }
                        _ => {
                            let at = (next.fetch_add(1, Ordering::Relaxed) % blocks) * block as u64;
                            file.seek(SeekFrom::Start(at)).await.map_err(|e| e.to_string())?;
                            file.write_all(&buf).await.map_err(|e| e.to_string())?;
                            if pattern == "writesync" {
                                file.sync_data().await.map_err(|e| e.to_string())?;
                            } else {
                                file.flush().await.map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    let end = Instant::now();
                    if begin >= counting_from && end <= deadline {
                        lat.push((end - begin).as_nanos() as u64);
                        bytes += block as u64;
                    }
                }
                Ok::<_, String>((lat, bytes))
            });
        }
        let mut lat = Vec::new();
        let mut bytes = 0;
        while let Some(joined) = tasks.join_next().await {
            let (l, b) = joined.map_err(|e| e.to_string())??;
            lat.extend(l);
            bytes += b;
        }
        Ok::<_, String>((lat, bytes, duration))
    })?;
    let mut lat = lat;
    lat.sort_unstable();
    if lat.is_empty() {
        return Err("no operation completed".into());
    }
    let mean = lat.iter().sum::<u64>() as f64 / lat.len() as f64;
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    let mut line = format!("{} {} {} {mean:.0}", lat.len(), bytes, elapsed.as_nanos());
    for q in quantiles {
        line.push_str(&format!(" {}", at(q)));
    }
    println!("{line}");
    Ok(())
}
