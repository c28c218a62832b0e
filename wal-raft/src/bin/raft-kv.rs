//! `raft-kv`: one node of a replicated key-value map, its raft log on diskio's WAL
//! (`wal_raft::LogStore`, on the blocking backend), its peers reached over TCP (`wal_raft::net`).
//!
//! ```text
//! raft-kv --id 1 --listen 127.0.0.1:7101 --dir n1 \
//!     --peer 1=127.0.0.1:7101 --peer 2=127.0.0.1:7102 --peer 3=127.0.0.1:7103 --init
//! ```
//!
//! Start one process per node with the same `--peer` list; give `--init` to one of them the
//! first time (it makes the peers the cluster's members; later it is a no-op). Clients talk to
//! any node with `wal_raft::kv::Client`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use wal::WalOptions;
use wal_raft::LogStore;
use wal_raft::kv::serve;
use wal_raft::kv::{KvConfig, KvStateMachine, NodeId};
use wal_raft::net::Network;

/// One node of a replicated key-value map on diskio's WAL.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// This node's id (one of the `--peer` ids).
    #[arg(long)]
    id: NodeId,
    /// Address to serve raft and clients on.
    #[arg(long)]
    listen: String,
    /// Directory of this node's log and raft state.
    #[arg(long)]
    dir: PathBuf,
    /// A member of the cluster, `ID=HOST:PORT`; repeat for each (this node included).
    #[arg(long = "peer", value_parser = wal_raft::net::parse_peer, required = true)]
    peers: Vec<(NodeId, String)>,
    /// Make the peers the cluster's members (once, on one node; a no-op after).
    #[arg(long)]
    init: bool,
    /// Take a snapshot (and purge the log before it) every this many entries.
    #[arg(long, default_value_t = 5_000)]
    snapshot_every: u64,
    /// How long a wait for the disk spins before it sleeps, in µs (the blocking backend's
    /// `spin`): spinning wins a few µs per sync on an idle core and steals a core from the other
    /// processes on a busy machine.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// Print the log's counters (appends, groups, records per group, sync latency) to stderr
    /// every this many seconds; 0 never.
    #[arg(long, default_value_t = 0)]
    stats_every: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raft-kv: cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raft-kv: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let members: BTreeMap<NodeId, BasicNode> = args
        .peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr)))
        .collect();
    if !members.contains_key(&args.id) {
        return Err(format!(
            "node {} is not among the peers {:?}",
            args.id,
            members.keys()
        )
        .into());
    }
    let config = Config {
        cluster_name: "raft-kv".to_owned(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1_200,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(args.snapshot_every),
        max_in_snapshot_log_to_keep: args.snapshot_every / 2,
        ..Config::default()
    }
    .validate()?;
    let disk = diskio_blocking::BlockingDisk::new(
        diskio_blocking::BlockingOptions::new()
            .spin(std::time::Duration::from_micros(args.spin_us)),
    )?;
    let store: LogStore<KvConfig, diskio_blocking::BlockingDisk> =
        LogStore::open(disk, args.dir.join("raft"), WalOptions::new()).await?;
    if args.stats_every > 0 {
        let (log, id, every) = (store.wal().clone(), args.id, args.stats_every);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(every)).await;
                let s = log.stats();
                eprintln!(
                    "raft-kv: node {id}: {} appends in {} groups ({:.1} per group), {} syncs, \
                     sync p50 {:.0} µs p99 {:.0} µs",
                    s.appends,
                    s.groups,
                    s.records_per_group(),
                    s.syncs,
                    s.sync_us.p50,
                    s.sync_us.p99
                );
            }
        });
    }
    let sm = KvStateMachine::open(args.dir.join("sm"))?;
    let raft = Raft::new(
        args.id,
        Arc::new(config),
        Network::default(),
        store,
        sm.clone(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    if args.init {
        if let Err(e) = raft.initialize(members).await {
            eprintln!("raft-kv: node {}: not initializing: {e}", args.id);
        }
    }
    eprintln!("raft-kv: node {} serving on {}", args.id, args.listen);
    serve(listener, raft, sm).await;
    Ok(())
}
