//! A TCP transport for the key-value cluster of the examples and tests: openraft's network
//! (`RaftNetworkFactory`), the server that answers it and clients, and a client for writes and
//! reads that follows the leader.
//!
//! Every message is one frame: a `u32` little-endian length, then the message encoded with
//! postcard. One request is in flight per connection; a connection that fails is dropped and
//! made again on the next call.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError,
    RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::kv::{KvConfig, KvStateMachine, NodeId, Request};

/// Largest frame accepted: a snapshot chunk or a batch of entries fits well inside it.
const FRAME_MAX: usize = 64 << 20;

/// What a node is asked.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// Raft: replicate entries (or a heartbeat).
    AppendEntries(AppendEntriesRequest<KvConfig>),
    /// Raft: a chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<KvConfig>),
    /// Raft: a vote request.
    Vote(VoteRequest<NodeId>),
    /// Client: apply a change through the leader. Writes that arrive while the node's previous
    /// proposal is in flight are proposed together, as one entry.
    Write(Request),
    /// Client: the value of a key; `linearizable` asks the leader to confirm its leadership
    /// first, otherwise the node answers from its own state machine.
    Read {
        /// The key.
        key: String,
        /// Confirm with a quorum before answering (leader only).
        linearizable: bool,
    },
    /// Client: the node's view of the cluster.
    Status,
}

/// A node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Message::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Message::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To [`Message::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Message::Write`]: the log index the change was committed at.
    Written(Result<u64, ClientFailure>),
    /// To [`Message::Read`].
    Value(Result<Option<Vec<u8>>, ClientFailure>),
    /// To [`Message::Status`].
    Status(Status),
}

/// Why a client request was not served.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ClientFailure {
    /// This node is not the leader; the leader it knows of, if any.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader {
        /// The leader's id.
        leader: Option<NodeId>,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A node's view of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its current term.
    pub term: u64,
    /// The last log index it applied.
    pub last_applied: Option<u64>,
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, msg: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(msg).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await
}

async fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut TcpStream) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > FRAME_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One connection to a node, made on first use and again after a failure.
pub struct Connection {
    addr: String,
    stream: Option<TcpStream>,
}

impl Connection {
    /// A connection to `addr` (not made yet).
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            stream: None,
        }
    }

    /// Sends `msg` and waits for the reply, for at most `ttl`.
    ///
    /// # Errors
    ///
    /// The connection's or the codec's error, or `TimedOut`.
    pub async fn call(&mut self, msg: &Message, ttl: Duration) -> io::Result<Reply> {
        let exchange = async {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr).await?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(io::Error::other("no connection"));
            };
            write_frame(stream, msg).await?;
            read_frame(stream).await
        };
        let res = match tokio::time::timeout(ttl, exchange).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply from {} in {ttl:?}", self.addr),
            )),
        };
        if res.is_err() {
            self.stream = None;
        }
        res
    }
}

/// openraft's network: a [`Connection`] per peer.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<KvConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Peer {
            target,
            conn: Connection::new(node.addr.clone()),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: NodeId,
    conn: Connection,
}

impl Peer {
    async fn rpc<E: std::error::Error>(
        &mut self,
        msg: Message,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<NodeId, BasicNode, E>> {
        self.conn
            .call(&msg, option.hard_ttl())
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })
    }

    fn unexpected<E: std::error::Error>(reply: &Reply) -> RPCError<NodeId, BasicNode, E> {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply {reply:?}"),
        );
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<KvConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.rpc(Message::AppendEntries(rpc), &option).await? {
            Reply::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KvConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.rpc(Message::InstallSnapshot(rpc), &option).await? {
            Reply::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.rpc(Message::Vote(rpc), &option).await? {
            Reply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(&other)),
        }
    }
}

/// Client writes waiting for the proposer, each with where its answer goes.
type Proposals = mpsc::Sender<(Request, oneshot::Sender<Result<u64, ClientFailure>>)>;

/// Most client writes proposed as one entry.
const BATCH_MAX: usize = 1024;

/// Proposes client writes to raft, one entry at a time: the writes that arrive while one is in
/// flight go together as the next ([`Request::Batch`]). openraft 0.9 waits for each entry it
/// appends to be durable on the leader before it takes the next, so a node that proposed
/// every client write as its own entry would pay one sync per write; batched, they share it.
async fn propose(
    raft: Raft<KvConfig>,
    mut rx: mpsc::Receiver<(Request, oneshot::Sender<Result<u64, ClientFailure>>)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (reqs, answers): (Vec<Request>, Vec<_>) = batch.into_iter().unzip();
        let entry = if reqs.len() == 1 {
            reqs.into_iter()
                .next()
                .unwrap_or(Request::Batch(Vec::new()))
        } else {
            Request::Batch(reqs)
        };
        let outcome = match raft.client_write(entry).await {
            Ok(r) => Ok(r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ClientFailure::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ClientFailure::Other(e.to_string())),
        };
        for tx in answers {
            let _ = tx.send(outcome.clone());
        }
    }
}

/// Serves raft and client messages on `listener` until the process ends.
pub async fn serve(listener: TcpListener, raft: Raft<KvConfig>, sm: KvStateMachine) {
    let (proposals, rx) = mpsc::channel(BATCH_MAX * 4);
    tokio::spawn(propose(raft.clone(), rx));
    let node = Arc::new((raft, sm, proposals));
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            while let Ok(msg) = read_frame::<Message>(&mut stream).await {
                let reply = answer(&node.0, &node.1, &node.2, msg).await;
                if write_frame(&mut stream, &reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn answer(
    raft: &Raft<KvConfig>,
    sm: &KvStateMachine,
    proposals: &Proposals,
    msg: Message,
) -> Reply {
    match msg {
        Message::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
        Message::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
        Message::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
        Message::Write(req) => {
            let (tx, rx) = oneshot::channel();
            if proposals.send((req, tx)).await.is_err() {
                return Reply::Written(Err(ClientFailure::Other(
                    "the node is shutting down".to_owned(),
                )));
            }
            Reply::Written(rx.await.unwrap_or_else(|_| {
                Err(ClientFailure::Other("the node is shutting down".to_owned()))
            }))
        }
        Message::Read { key, linearizable } => {
            if linearizable {
                match raft.ensure_linearizable().await {
                    Ok(_) => {}
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                        return Reply::Value(Err(ClientFailure::NotLeader {
                            leader: f.leader_id,
                        }));
                    }
                    Err(e) => return Reply::Value(Err(ClientFailure::Other(e.to_string()))),
                }
            }
            Reply::Value(Ok(sm.get(&key)))
        }
        Message::Status => {
            let m = raft.metrics().borrow().clone();
            Reply::Status(Status {
                id: m.id,
                leader: m.current_leader,
                term: m.current_term,
                last_applied: m.last_applied.map(|l| l.index),
            })
        }
    }
}

/// A client of the cluster: sends writes and reads to the leader, following redirects and
/// trying the other nodes while there is none, until its deadline.
pub struct Client {
    nodes: BTreeMap<NodeId, Connection>,
    leader: Option<NodeId>,
    /// How long one request may take, retries included.
    pub patience: Duration,
}

impl Client {
    /// A client of the nodes at `addrs`.
    pub fn new(addrs: &BTreeMap<NodeId, String>) -> Self {
        Self {
            nodes: addrs
                .iter()
                .map(|(&id, a)| (id, Connection::new(a.clone())))
                .collect(),
            leader: None,
            patience: Duration::from_secs(20),
        }
    }

    /// Applies `req` through the leader; returns the log index it was committed at.
    ///
    /// # Errors
    ///
    /// The last failure once the patience ran out.
    pub async fn write(&mut self, req: Request) -> Result<u64, String> {
        let msg = Message::Write(req);
        self.until_served(&msg, |r| match r {
            Reply::Written(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// Reads `key` through the leader, linearizably.
    ///
    /// # Errors
    ///
    /// The last failure once the patience ran out.
    pub async fn read(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let msg = Message::Read {
            key: key.to_owned(),
            linearizable: true,
        };
        self.until_served(&msg, |r| match r {
            Reply::Value(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// Reads `key` from node `id`'s own state machine (no leader involved).
    ///
    /// # Errors
    ///
    /// The node's error, or an unexpected reply.
    pub async fn read_local(&mut self, id: NodeId, key: &str) -> Result<Option<Vec<u8>>, String> {
        let msg = Message::Read {
            key: key.to_owned(),
            linearizable: false,
        };
        let conn = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        match conn
            .call(&msg, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?
        {
            Reply::Value(r) => r.map_err(|e| e.to_string()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Node `id`'s view of the cluster.
    ///
    /// # Errors
    ///
    /// The connection's error, or an unexpected reply.
    pub async fn status(&mut self, id: NodeId) -> Result<Status, String> {
        let conn = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        match conn
            .call(&Message::Status, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())?
        {
            Reply::Status(s) => Ok(s),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    async fn until_served<T>(
        &mut self,
        msg: &Message,
        pick: impl Fn(Reply) -> Option<Result<T, ClientFailure>>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + self.patience;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut turn = 0usize;
        let mut last = String::from("no node tried");
        while Instant::now() < deadline {
            let id = self.leader.unwrap_or(ids[turn % ids.len()]);
            turn += 1;
            let Some(conn) = self.nodes.get_mut(&id) else {
                self.leader = None;
                continue;
            };
            match conn.call(msg, Duration::from_secs(5)).await {
                Ok(reply) => match pick(reply) {
                    Some(Ok(v)) => {
                        self.leader = Some(id);
                        return Ok(v);
                    }
                    Some(Err(ClientFailure::NotLeader { leader })) => {
                        last = format!("node {id} is not the leader");
                        self.leader = leader.filter(|&l| l != id);
                        if self.leader.is_none() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Some(Err(ClientFailure::Other(e))) => {
                        last = format!("node {id}: {e}");
                        self.leader = None;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    None => last = format!("node {id}: unexpected reply"),
                },
                Err(e) => {
                    last = format!("node {id}: {e}");
                    self.leader = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(format!("gave up after {:?}: {last}", self.patience))
    }
}
