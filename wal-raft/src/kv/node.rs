//! The key-value node on the [`net`](crate::net) transport: the client requests it answers,
//! [`serve`] to run it, and a [`Client`] that follows the leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Raft;
use openraft::error::{CheckIsLeaderError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::{KvConfig, KvStateMachine, NodeId, Request, Response};
use crate::net::{Batching, ClientFailure, Connection, Proposer, Service, Status};

/// What a client asks a node.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// Apply a change through the leader. Writes that arrive while the node's previous
    /// proposal is in flight are proposed together, as one entry.
    Write(Request),
    /// The value of a key; `linearizable` asks the leader to confirm its leadership first,
    /// otherwise the node answers from its own state machine.
    Read {
        /// The key.
        key: String,
        /// Confirm with a quorum before answering (leader only).
        linearizable: bool,
    },
    /// The node's view of the cluster.
    Status,
}

/// A node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Message::Write`]: the log index the change was committed at.
    Written(Result<u64, ClientFailure>),
    /// To [`Message::Read`].
    Value(Result<Option<Vec<u8>>, ClientFailure>),
    /// To [`Message::Status`].
    Status(Status),
}

impl Batching for KvConfig {
    fn batch(writes: Vec<Request>) -> Request {
        Request::Batch(writes)
    }

    fn unbatch(_: Response, n: usize) -> Vec<Response> {
        // A batch's response carries no previous values.
        vec![Response::default(); n]
    }
}

/// A key-value node: its raft, its map, its proposer.
struct KvNode {
    raft: Raft<KvConfig>,
    sm: KvStateMachine,
    proposer: Proposer<KvConfig>,
}

impl Service for KvNode {
    type Request = Message;
    type Reply = Reply;

    async fn call(&self, msg: Message) -> Reply {
        match msg {
            Message::Write(req) => {
                Reply::Written(self.proposer.propose(req).await.map(|(index, _)| index))
            }
            Message::Read { key, linearizable } => {
                if linearizable {
                    match self.raft.ensure_linearizable().await {
                        Ok(_) => {}
                        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                            return Reply::Value(Err(ClientFailure::NotLeader {
                                leader: f.leader_id,
                            }));
                        }
                        Err(e) => return Reply::Value(Err(ClientFailure::Other(e.to_string()))),
                    }
                }
                Reply::Value(Ok(self.sm.get(&key)))
            }
            Message::Status => Reply::Status(Status::of(&self.raft)),
        }
    }
}

/// Serves raft and the key-value clients on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, raft: Raft<KvConfig>, sm: KvStateMachine) {
    let node = Arc::new(KvNode {
        proposer: Proposer::start(raft.clone()),
        raft: raft.clone(),
        sm,
    });
    crate::net::serve(listener, raft, node).await;
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

    async fn ask(&mut self, id: NodeId, msg: &Message, ttl: Duration) -> Result<Reply, String> {
        let conn = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        conn.call_app(msg, ttl).await.map_err(|e| e.to_string())
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
        match self.ask(id, &msg, Duration::from_secs(5)).await? {
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
        match self
            .ask(id, &Message::Status, Duration::from_secs(2))
            .await?
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
        if ids.is_empty() {
            return Err("the client knows no node".to_owned());
        }
        let mut turn = 0usize;
        let mut last = String::from("no node tried");
        while Instant::now() < deadline {
            let id = self.leader.unwrap_or(ids[turn % ids.len()]);
            turn += 1;
            match self.ask(id, msg, Duration::from_secs(5)).await {
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
