//! `wal-load`: durable appends to one WAL in this process, by N concurrent tasks: the
//! reference `logd/load.sh` sets beside the service's figures.
//!
//! ```text
//! wal-load --dir DIR --clients 64 --seconds 5 --bytes 100
//! ```
//!
//! Prints one line: appends per second, p50 and p99 latency in µs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use wal::{Wal, WalOptions};

/// Durable appends to one WAL, in-process, by concurrent tasks.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Directory for the log (emptied first, removed after).
    #[arg(long)]
    dir: PathBuf,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Bytes per record.
    #[arg(long, default_value_t = 100)]
    bytes: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wal-load: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wal-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let disk = wal::DefaultDisk::with_defaults()?;
    let (log, _) = Wal::open(disk, &args.dir, WalOptions::new()).await?;
    let record = vec![b'x'; args.bytes];
    for _ in 0..100 {
        log.append(&record).await?;
    }
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| {
            let (log, record) = (log.clone(), record.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    log.append(&record).await.map_err(|e| e.to_string())?;
                    lat.push(t.elapsed().as_micros() as u64);
                }
                Ok::<_, String>(lat)
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    log.close().await?;
    let _ = std::fs::remove_dir_all(&args.dir);
    all.sort_unstable();
    let q = |f: f64| {
        all.get(((all.len().saturating_sub(1)) as f64 * f) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!("{:.0} {} {}", all.len() as f64 / secs, q(0.5), q(0.99));
    Ok(())
}
