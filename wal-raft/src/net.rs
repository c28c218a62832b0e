//! A TCP transport for raft clusters of any type configuration: openraft's network
//! ([`Network`]), the server that answers it beside an application's own requests ([`serve`],
//! [`Service`]), and a [`Proposer`] that lets client writes share raft entries.
//!
//! Every message is one frame: a `u32` little-endian length, then the message encoded with
//! postcard. A frame is a [`Frame`]: a raft message between nodes, or one of the application's
//! own. One request is in flight per connection; a connection that fails is dropped and made
//! again on the next call.
//!
//! [`kv`](crate::kv) builds its key-value node on this; `logd` builds its clustered mode on it.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::impls::OneshotResponder;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Parses a member of a cluster given as `ID=HOST:PORT` (as the nodes' `--peer` and `--peers`
/// options take them).
///
/// # Errors
///
/// A message saying what is wrong with `s`.
pub fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not ID=HOST:PORT"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|e| format!("`{id}` is not a node id: {e}"))?;
    Ok((id, addr.trim().to_owned()))
}

/// Largest frame accepted: a snapshot chunk or a batch of entries fits well inside it.
const FRAME_MAX: usize = 64 << 20;

/// The type configurations this transport carries: `u64` node ids, [`BasicNode`] addresses
/// (`host:port` of the node's transport), openraft's oneshot responder, and entries and
/// snapshots that serde can encode.
pub trait Wire:
    RaftTypeConfig<NodeId = u64, Node = BasicNode, Responder = OneshotResponder<Self>>
{
}

impl<C> Wire for C where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Responder = OneshotResponder<C>>
{
}

/// One frame on the wire: raft's traffic between nodes, or the application's requests and
/// replies.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame<R, A> {
    /// Raft between nodes.
    Raft(R),
    /// The application's own message.
    App(A),
}

/// What a node asks another on raft's behalf.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum RaftMessage<C: Wire> {
    /// Replicate entries (or a heartbeat).
    AppendEntries(AppendEntriesRequest<C>),
    /// A chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<C>),
    /// A vote request.
    Vote(VoteRequest<u64>),
}

/// The answer to a [`RaftMessage`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// To [`RaftMessage::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// To [`RaftMessage::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// To [`RaftMessage::Vote`].
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
}

/// Why a client request was not served.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ClientFailure {
    /// This node is not the leader; the leader it knows of, if any.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader {
        /// The leader's id.
        leader: Option<u64>,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A node's view of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The node.
    pub id: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// The last log index it applied.
    pub last_applied: Option<u64>,
}

impl Status {
    /// `raft`'s view now.
    pub fn of<C: Wire>(raft: &Raft<C>) -> Self {
        let m = raft.metrics().borrow().clone();
        Self {
            id: m.id,
            leader: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index),
        }
    }
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, msg: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l as usize <= FRAME_MAX)
        .ok_or_else(|| io::Error::other(format!("a frame of {} bytes", body.len())))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await
}

async fn read_frame<T: DeserializeOwned>(stream: &mut TcpStream) -> io::Result<T> {
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

    /// The address this connects to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `msg` and waits for the reply, for at most `ttl`.
    ///
    /// # Errors
    ///
    /// The connection's or the codec's error, or `TimedOut`.
    pub async fn call<M: Serialize, R: DeserializeOwned>(
        &mut self,
        msg: &M,
        ttl: Duration,
    ) -> io::Result<R> {
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

    /// Sends the application's `msg` to a node's [`serve`] and waits for its reply.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call); `InvalidData` when the node answers with a raft reply.
    pub async fn call_app<A: Serialize, B: DeserializeOwned>(
        &mut self,
        msg: &A,
        ttl: Duration,
    ) -> io::Result<B> {
        match self
            .call::<_, Frame<RaftReply, B>>(&Frame::<(), &A>::App(msg), ttl)
            .await?
        {
            Frame::App(b) => Ok(b),
            Frame::Raft(r) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} answered a raft reply {r:?}", self.addr),
            )),
        }
    }
}

/// openraft's network: a [`Connection`] per peer, at the address in its [`BasicNode`].
pub struct Network<C>(PhantomData<fn() -> C>);

impl<C> Default for Network<C> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<C> Clone for Network<C> {
    fn clone(&self) -> Self {
        Self(PhantomData)
    }
}

impl<C: Wire> RaftNetworkFactory<C> for Network<C> {
    type Network = Peer<C>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Peer {
            target,
            conn: Connection::new(node.addr.clone()),
            _config: PhantomData,
        }
    }
}

/// The connection to one peer.
pub struct Peer<C> {
    target: u64,
    conn: Connection,
    _config: PhantomData<fn() -> C>,
}

impl<C: Wire> Peer<C> {
    async fn rpc<E: std::error::Error>(
        &mut self,
        msg: RaftMessage<C>,
        option: &RPCOption,
    ) -> Result<RaftReply, RPCError<u64, BasicNode, E>> {
        let reply = self
            .conn
            .call::<_, Frame<RaftReply, ()>>(&Frame::<_, ()>::Raft(msg), option.hard_ttl())
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        match reply {
            Frame::Raft(r) => Ok(r),
            Frame::App(()) => Err(self.unexpected("an application reply")),
        }
    }

    fn unexpected<E: std::error::Error>(&self, what: &str) -> RPCError<u64, BasicNode, E> {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("node {} answered {what}", self.target),
        );
        RPCError::Network(NetworkError::new(&e))
    }
}

impl<C: Wire> RaftNetwork<C> for Peer<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.rpc(RaftMessage::AppendEntries(rpc), &option).await? {
            RaftReply::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&format!("{other:?}"))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self.rpc(RaftMessage::InstallSnapshot(rpc), &option).await? {
            RaftReply::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&format!("{other:?}"))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.rpc(RaftMessage::Vote(rpc), &option).await? {
            RaftReply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&format!("{other:?}"))),
        }
    }
}

/// What a node answers besides raft: the application's requests, served by [`serve`].
pub trait Service: Send + Sync + 'static {
    /// A request from a client or another node.
    type Request: DeserializeOwned + Send;
    /// Its answer.
    type Reply: Serialize + Send + Sync;

    /// Answers `req`.
    fn call(&self, req: Self::Request) -> impl Future<Output = Self::Reply> + Send;
}

/// Serves raft's messages for `raft` and the application's for `service` on `listener`, until
/// the task is dropped.
pub async fn serve<C: Wire, S: Service>(listener: TcpListener, raft: Raft<C>, service: Arc<S>) {
    let raft = Arc::new(raft);
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
        let (raft, service) = (Arc::clone(&raft), Arc::clone(&service));
        tokio::spawn(async move {
            while let Ok(msg) = read_frame::<Frame<RaftMessage<C>, S::Request>>(&mut stream).await {
                let reply = match msg {
                    Frame::Raft(m) => Frame::Raft(answer_raft(&raft, m).await),
                    Frame::App(req) => Frame::App(service.call(req).await),
                };
                if write_frame(&mut stream, &reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn answer_raft<C: Wire>(raft: &Raft<C>, msg: RaftMessage<C>) -> RaftReply {
    match msg {
        RaftMessage::AppendEntries(rpc) => RaftReply::AppendEntries(raft.append_entries(rpc).await),
        RaftMessage::InstallSnapshot(rpc) => {
            RaftReply::InstallSnapshot(raft.install_snapshot(rpc).await)
        }
        RaftMessage::Vote(rpc) => RaftReply::Vote(raft.vote(rpc).await),
    }
}

/// A type configuration whose entries can carry several client writes at once.
pub trait Batching: Wire {
    /// One entry carrying `writes`, applied in order (never called with fewer than two).
    fn batch(writes: Vec<Self::D>) -> Self::D;
    /// The answers to the `n` writes of a batch entry, in order, from the entry's answer.
    fn unbatch(response: Self::R, n: usize) -> Vec<Self::R>;
}

/// What a proposed write comes back with: the log index of its entry and its answer.
pub type Proposed<C> = Result<(u64, <C as RaftTypeConfig>::R), ClientFailure>;

/// Most client writes proposed as one entry.
const BATCH_MAX: usize = 1024;

/// Proposes client writes to raft, one entry at a time: the writes that arrive while one is in
/// flight go together as the next ([`Batching::batch`]). openraft 0.9 waits for each entry it
/// appends to be durable on the leader before it takes the next, so a node that proposed
/// every client write as its own entry would pay one sync per write; batched, they share it.
pub struct Proposer<C: Batching> {
    tx: mpsc::Sender<(C::D, oneshot::Sender<Proposed<C>>)>,
}

impl<C: Batching> Clone for Proposer<C> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<C: Batching> Proposer<C> {
    /// A proposer for `raft`; its task runs until every clone is dropped.
    pub fn start(raft: Raft<C>) -> Self {
        let (tx, rx) = mpsc::channel(BATCH_MAX * 4);
        tokio::spawn(propose(raft, rx));
        Self { tx }
    }

    /// Proposes `write`; its entry's log index and answer once committed and applied here.
    ///
    /// # Errors
    ///
    /// [`ClientFailure::NotLeader`] on a follower; [`ClientFailure::Other`] for raft's other
    /// errors and while the node shuts down.
    pub async fn propose(&self, write: C::D) -> Proposed<C> {
        let gone = || ClientFailure::Other("the node is shutting down".to_owned());
        let (tx, rx) = oneshot::channel();
        self.tx.send((write, tx)).await.map_err(|_| gone())?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

async fn propose<C: Batching>(
    raft: Raft<C>,
    mut rx: mpsc::Receiver<(C::D, oneshot::Sender<Proposed<C>>)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let (writes, answers): (Vec<C::D>, Vec<_>) = batch.into_iter().unzip();
        let entry = if n == 1 {
            match writes.into_iter().next() {
                Some(w) => w,
                None => continue,
            }
        } else {
            C::batch(writes)
        };
        match raft.client_write(entry).await {
            Ok(r) => {
                let index = r.log_id.index;
                let responses = if n == 1 {
                    vec![r.data]
                } else {
                    C::unbatch(r.data, n)
                };
                for (tx, resp) in answers.into_iter().zip(responses) {
                    let _ = tx.send(Ok((index, resp)));
                }
            }
            Err(e) => {
                let failure = match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                        ClientFailure::NotLeader {
                            leader: f.leader_id,
                        }
                    }
                    e => ClientFailure::Other(e.to_string()),
                };
                for tx in answers {
                    let _ = tx.send(Err(failure.clone()));
                }
            }
        }
    }
}
