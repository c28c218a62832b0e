//! `logd`: the WAL as an HTTP service (see the crate docs and `logd --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The WAL as a service: partitioned, ordered, replayable topics over HTTP; appends are
/// answered once durable.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Directory of the topics' logs (created if missing).
    #[arg(long, default_value = "./logd-data")]
    data: PathBuf,
    /// The largest record accepted, in bytes (larger ones get 413).
    #[arg(long, default_value_t = 1 << 20)]
    record_max: usize,
    /// Clustered mode: this node's id, one of the `--peers` ids.
    #[arg(long, requires = "peers")]
    node_id: Option<u64>,
    /// Clustered mode: every member's raft address as `ID=HOST:PORT`, this node's included
    /// (it listens there for its peers), comma-separated or repeated. The node with the lowest
    /// id makes them the cluster the first time.
    #[arg(long, value_delimiter = ',', value_parser = wal_raft::net::parse_peer, requires = "node_id")]
    peers: Vec<(u64, String)>,
    /// Clustered mode: raft entries between snapshots. A snapshot syncs every partition and
    /// lets the raft log before it be purged; after a restart, entries after the last snapshot
    /// are applied again (a partition skips those it holds).
    #[arg(long, default_value_t = logd::cluster::SNAPSHOT_EVERY, requires = "node_id")]
    snapshot_every: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // logd's own events from `info`, its libraries' (openraft's) from `warn`.
    let filter = Targets::new()
        .with_target("logd", Level::INFO)
        .with_default(Level::WARN);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logd: cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let config = logd::Config {
        listen: args.listen,
        data: args.data,
        record_max: args.record_max,
        cluster: args.node_id.map(|node_id| logd::cluster::ClusterConfig {
            node_id,
            peers: args.peers.into_iter().collect(),
            snapshot_every: args.snapshot_every,
        }),
    };
    match rt.block_on(logd::run(config, stop_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("logd: cannot watch SIGTERM ({e}); Ctrl-C still stops the server");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
