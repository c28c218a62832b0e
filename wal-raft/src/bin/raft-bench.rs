//! `raft-bench`: replicated durable writes on a 3-node `raft-kv` cluster on loopback, at 1 and
//! 64 concurrent clients, against two references measured in the same run:
//!
//! - the same cluster with its logs on `/dev/shm` (tmpfs: a sync costs nothing), the upper
//!   bound of this stack without durability;
//! - the WAL alone, in this process, durable appends of the same size at the same
//!   concurrency: what one node's log costs before any replication.
//!
//! ```text
//! cargo build --release -p wal-raft && ./target/release/raft-bench --seconds 5
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use wal::{Wal, WalOptions};
use wal_raft::kv::Client;
use wal_raft::kv::Request;

/// Replicated durable writes on a 3-node cluster against references from the same run.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Seconds to measure each figure.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Directory for the durable cluster's and the WAL's files (default: a directory under
    /// the system's temporary directory; it should be on the disk you want to measure).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Directory for the cluster without durability.
    #[arg(long, default_value = "/dev/shm")]
    memory_dir: PathBuf,
    /// `--spin-us` of the nodes (how long their waits for the disk spin).
    #[arg(long, default_value_t = 50)]
    node_spin_us: u64,
    /// Let the nodes print their log's counters every this many seconds (to stderr).
    #[arg(long, default_value_t = 0)]
    node_stats: u64,
}

#[derive(Debug, Clone, Copy)]
struct Figure {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raft-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raft-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &Path, what: &str) -> std::io::Result<Self> {
        let p = base.join(format!("raft-bench-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot create {}: {e}", p.display()))
        })?;
        Ok(Self(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let secs = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();
    for &c in &args.clients {
        let durable = {
            let dir = Scratch::new(&base, "disk")?;
            cluster_figure(&dir.0, c, secs, &args).await?
        };
        let memory = {
            let dir = Scratch::new(&args.memory_dir, "shm")?;
            cluster_figure(&dir.0, c, secs, &args).await?
        };
        let wal = {
            let dir = Scratch::new(&base, "wal")?;
            wal_figure(&dir.0, c, secs).await?
        };
        eprintln!("raft-bench: {c} clients done");
        rows.push((c, durable, memory, wal));
    }
    println!(
        "Replicated writes, 3 raft-kv nodes on loopback (logs on the blocking backend, spin {} µs), \
         {} s each",
        args.node_spin_us, args.seconds
    );
    println!(
        "{:>8} | {:>22} | {:>22} | {:>22} | {:>9} | {:>9}",
        "clients",
        "durable cluster",
        "cluster on tmpfs",
        "WAL alone, durable",
        "vs tmpfs",
        "vs WAL"
    );
    for (c, d, m, w) in rows {
        let cell = |f: Figure| format!("{:>7.0}/s {:>5.0}/{:<6.0}", f.per_sec, f.p50_us, f.p99_us);
        println!(
            "{c:>8} | {:>22} | {:>22} | {:>22} | {:>8.2}x | {:>8.2}x",
            cell(d),
            cell(m),
            cell(w),
            d.per_sec / m.per_sec,
            d.per_sec / w.per_sec
        );
    }
    println!("(writes per second, p50/p99 latency in µs)");
    Ok(())
}

fn free_addr() -> std::io::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts a cluster with its nodes' directories under `dir`, measures `clients` writers.
async fn cluster_figure(
    dir: &Path,
    clients: usize,
    secs: Duration,
    args: &Args,
) -> Result<Figure, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?.with_file_name("raft-kv");
    if !exe.exists() {
        return Err(format!(
            "{} not found: build the raft-kv binary too (cargo build --release -p wal-raft)",
            exe.display()
        )
        .into());
    }
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        peers.insert(id, free_addr()?);
    }
    let mut nodes = Nodes(Vec::new());
    for (&id, addr) in &peers {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--id",
            &id.to_string(),
            "--listen",
            addr,
            "--spin-us",
            &args.node_spin_us.to_string(),
            "--stats-every",
            &args.node_stats.to_string(),
        ])
        .arg("--dir")
        .arg(dir.join(format!("n{id}")))
        .stdout(Stdio::null())
        .stderr(if args.node_stats > 0 {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        for (p, a) in &peers {
            cmd.arg("--peer").arg(format!("{p}={a}"));
        }
        if id == 1 {
            cmd.arg("--init");
        }
        nodes.0.push(cmd.spawn()?);
    }
    // Warm up: the first writes wait for the election.
    let mut warm = Client::new(&peers);
    for i in 0..100 {
        warm.write(Request::Set {
            key: format!("warm{i}"),
            value: vec![0; 32],
        })
        .await?;
    }
    let peers = Arc::new(peers);
    let until = Instant::now() + secs;
    let tasks: Vec<_> = (0..clients)
        .map(|w| {
            let peers = Arc::clone(&peers);
            tokio::spawn(async move {
                let mut client = Client::new(&peers);
                let mut h = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
                let mut i = 0u64;
                while Instant::now() < until {
                    let started = Instant::now();
                    client
                        .write(Request::Set {
                            key: format!("c{w}-{i}"),
                            value: vec![i as u8; 32],
                        })
                        .await?;
                    let _ = h.record(started.elapsed().as_micros() as u64);
                    i += 1;
                }
                Ok::<_, String>(h)
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(nodes);
    Ok(Figure {
        per_sec: all.len() as f64 / elapsed,
        p50_us: all.value_at_quantile(0.5) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
    })
}

/// Durable appends of one entry's size by `clients` tasks on the WAL alone.
async fn wal_figure(
    dir: &Path,
    clients: usize,
    secs: Duration,
) -> Result<Figure, Box<dyn std::error::Error>> {
    let disk = wal::DefaultDisk::with_defaults()?;
    let (log, _) = Wal::open(disk, dir, WalOptions::new()).await?;
    // An encoded Set entry of a short key and 32 bytes is about this size.
    let record = vec![7u8; 60];
    for _ in 0..100 {
        log.append(&record).await?;
    }
    let until = Instant::now() + secs;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (log, record) = (log.clone(), record.clone());
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
                while Instant::now() < until {
                    let started = Instant::now();
                    log.append(&record).await.map_err(|e| e.to_string())?;
                    let _ = h.record(started.elapsed().as_micros() as u64);
                }
                Ok::<_, String>(h)
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    log.close().await?;
    Ok(Figure {
        per_sec: all.len() as f64 / elapsed,
        p50_us: all.value_at_quantile(0.5) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
    })
}
