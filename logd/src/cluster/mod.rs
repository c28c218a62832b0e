//! Clustered mode: the topics replicated through raft (openraft, its log on diskio's WAL via
//! `wal_raft::LogStore`), the nodes talking over `wal_raft::net`.
//!
//! Any node takes requests. A change (creating a topic, appending a record) is proposed by the
//! leader: a node that is not the leader forwards it to the leader over the raft transport and
//! answers with the leader's outcome. An append is answered once its raft entry is committed
//! (durable on a majority of nodes) and applied on the node that proposed it, its record
//! durable in that node's partition. Reads are served by each node from its own partitions:
//! a follower serves what it has applied, which may trail the leader by a few milliseconds.
//!
//! A node's data directory holds `raft/` (the raft log and vote), `sm/` (the latest snapshot:
//! a watermark, see [`machine`]), `topics/` (the partitions) and `cluster.json` (its node id).

pub mod machine;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use wal::WalOptions;
use wal_raft::LogStore;
use wal_raft::net::{ClientFailure, Connection, Network, Proposer, Service, Status};

pub use machine::{Command, LogdConfig, Machine, Outcome, PREFIX};

use crate::topics::Topics;

/// Entries between snapshots, by default.
pub const SNAPSHOT_EVERY: u64 = 20_000;
/// Entries kept in the raft log behind a snapshot, for followers that lag.
pub const LOG_KEPT: u64 = 100_000;
/// How long a change waits for a leader before it is answered with 503.
const LEADER_PATIENCE: Duration = Duration::from_secs(10);
/// How long a forwarded change may take.
const FORWARD_TTL: Duration = Duration::from_secs(30);

/// Where a clustered node stands.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: u64,
    /// Every member's raft address, this node's included (it listens there).
    pub peers: BTreeMap<u64, String>,
    /// Raft entries between snapshots (each a sync of every partition, after which the raft
    /// log before it, less [`LOG_KEPT`] entries, is purged).
    pub snapshot_every: u64,
}

/// What a node asks the leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Propose this change.
    Write(Command),
}

/// [`PeerRequest`] borrowing its command: encoded the same, so a forward copies no record.
#[derive(Serialize)]
enum PeerRequestRef<'a> {
    Write(&'a Command),
}

/// The leader's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    /// The outcome of the change.
    Written(Result<Outcome, ClientFailure>),
}

/// A running clustered node.
pub struct Cluster {
    id: u64,
    raft: Raft<LogdConfig>,
    proposer: Proposer<LogdConfig>,
    peers: BTreeMap<u64, String>,
    /// Idle connections to each peer, for forwarded changes.
    idle: Mutex<HashMap<u64, Vec<Connection>>>,
}

/// The marker file of a clustered data directory.
const MARKER: &str = "cluster.json";

#[derive(Serialize, Deserialize)]
struct Marker {
    node_id: u64,
}

/// Whether `data` belongs to a clustered node: its node id.
///
/// # Errors
///
/// The marker cannot be read.
pub fn marked(data: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::read(data.join(MARKER)) {
        Ok(b) => serde_json::from_slice::<Marker>(&b)
            .map(|m| Some(m.node_id))
            .map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", data.join(MARKER).display()),
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks that `data` is node `id`'s (or new) and marks it as such.
///
/// # Errors
///
/// `data` belongs to another node or holds a single node's topics; the file system's errors.
pub fn claim(data: &Path, id: u64) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(data)?;
    match marked(data)? {
        Some(n) if n == id => Ok(()),
        Some(n) => Err(format!(
            "{} belongs to node {n}, not node {id}: give each node its own --data",
            data.display()
        )
        .into()),
        None => {
            if std::fs::read_dir(data)?.next().is_some() {
                return Err(format!(
                    "{} holds a single node's topics: a clustered node needs a new --data",
                    data.display()
                )
                .into());
            }
            let marker = serde_json::to_vec(&Marker { node_id: id })?;
            let temp = data.join(format!("{MARKER}.tmp"));
            std::fs::write(&temp, marker)?;
            std::fs::File::open(&temp)?.sync_all()?;
            std::fs::rename(&temp, data.join(MARKER))?;
            std::fs::File::open(data)?.sync_all()?;
            Ok(())
        }
    }
}

/// The topics directory of a clustered node.
pub fn topics_dir(data: &Path) -> std::path::PathBuf {
    data.join("topics")
}

/// The log options of a clustered node's partitions: room for the raft index in front.
pub fn partition_options(record_max: usize) -> WalOptions {
    WalOptions::new().record_max(record_max + PREFIX)
}

impl Cluster {
    /// Starts this node on its [`claim`]ed `data`: opens the raft log and the state machine over
    /// `topics`, serves the raft transport, and (on the lowest id, the first time) makes the
    /// peers the cluster's members.
    ///
    /// # Errors
    ///
    /// A data directory of another node or of a single node; the log's, the file system's
    /// or raft's errors; the raft address cannot be bound.
    pub async fn start(
        config: &ClusterConfig,
        data: &Path,
        topics: Arc<Topics>,
    ) -> Result<Arc<Self>, Box<dyn std::error::Error>> {
        let id = config.node_id;
        let Some(addr) = config.peers.get(&id) else {
            return Err(format!(
                "--node-id {id} is not among the --peers ({:?})",
                config.peers.keys().collect::<Vec<_>>()
            )
            .into());
        };
        let disk = wal::DefaultDisk::with_defaults()?;
        let store: LogStore<LogdConfig, _> =
            LogStore::open(disk, data.join("raft"), WalOptions::new()).await?;
        let machine = Machine::open(topics, &data.join("sm")).await?;
        let raft_config = openraft::Config {
            cluster_name: "logd".to_owned(),
            heartbeat_interval: 150,
            election_timeout_min: 600,
            election_timeout_max: 1_200,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: LOG_KEPT,
            ..openraft::Config::default()
        }
        .validate()?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network::default(),
            store,
            machine,
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for raft on {addr}: {e}"))?;
        let node = Arc::new(Self {
            id,
            proposer: Proposer::start(raft.clone()),
            raft: raft.clone(),
            peers: config.peers.clone(),
            idle: Mutex::new(HashMap::new()),
        });
        tokio::spawn(wal_raft::net::serve(
            listener,
            raft.clone(),
            Arc::clone(&node),
        ));
        let lowest = config.peers.keys().next().copied();
        if lowest == Some(id) && !raft.is_initialized().await? {
            let members: BTreeMap<u64, BasicNode> = config
                .peers
                .iter()
                .map(|(&n, a)| (n, BasicNode::new(a)))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                tracing::warn!(error = %e, "not initializing the cluster");
            }
        }
        tracing::info!(node = id, raft = %addr, "clustered node started");
        Ok(node)
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> Status {
        Status::of(&self.raft)
    }

    /// The members' raft addresses.
    pub fn peers(&self) -> &BTreeMap<u64, String> {
        &self.peers
    }

    /// Replicates `cmd` through the leader (this node or another) and returns its outcome.
    ///
    /// # Errors
    ///
    /// No leader within the patience, a shutting-down node, or a forward that failed after it
    /// was sent (the change may then have been applied).
    pub async fn write(&self, cmd: Command) -> Result<Outcome, ClientFailure> {
        let deadline = Instant::now() + LEADER_PATIENCE;
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            let res = match leader {
                Some(l) if l == self.id => self.proposer.propose(cmd.clone()).await.map(|r| r.1),
                Some(l) => self.forward(l, &cmd).await,
                None => Err(ClientFailure::NotLeader { leader: None }),
            };
            match res {
                Err(ClientFailure::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(ClientFailure::NotLeader { .. }) => {
                    return Err(ClientFailure::Other(format!(
                        "no leader reachable within {LEADER_PATIENCE:?}"
                    )));
                }
                other => return other,
            }
        }
    }

    /// Sends `cmd` to node `leader` to propose.
    async fn forward(&self, leader: u64, cmd: &Command) -> Result<Outcome, ClientFailure> {
        let Some(addr) = self.peers.get(&leader) else {
            return Err(ClientFailure::Other(format!("unknown leader {leader}")));
        };
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&leader)
            .and_then(Vec::pop);
        let mut conn = pooled.unwrap_or_else(|| Connection::new(addr.clone()));
        let msg = PeerRequestRef::Write(cmd);
        match conn.call_app::<_, PeerReply>(&msg, FORWARD_TTL).await {
            Ok(PeerReply::Written(r)) => {
                self.idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(leader)
                    .or_default()
                    .push(conn);
                r
            }
            // Never sent: safe to try again once a leader is known.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(ClientFailure::NotLeader { leader: None })
            }
            Err(e) => Err(ClientFailure::Other(format!(
                "forwarding to the leader (node {leader}): {e}; the change may have been applied"
            ))),
        }
    }

    /// Stops raft on this node.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }
}

impl Service for Cluster {
    type Request = PeerRequest;
    type Reply = PeerReply;

    async fn call(&self, req: PeerRequest) -> PeerReply {
        match req {
            PeerRequest::Write(cmd) => {
                PeerReply::Written(self.proposer.propose(cmd).await.map(|r| r.1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_forward_encodes_as_the_owned_request() -> Result<(), postcard::Error> {
        let cmd = Command::Append {
            topic: "t".to_owned(),
            partition: 2,
            data: b"record".to_vec(),
        };
        let borrowed = postcard::to_allocvec(&PeerRequestRef::Write(&cmd))?;
        let owned = postcard::to_allocvec(&PeerRequest::Write(cmd))?;
        assert_eq!(borrowed, owned);
        Ok(())
    }
}
