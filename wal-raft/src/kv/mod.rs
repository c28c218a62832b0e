//! A key-value state machine for the examples and tests: an in-memory map, with snapshots that
//! are the whole map encoded.
//!
//! The map itself lives in memory. [`KvStateMachine::new`] keeps nothing on disk (tests);
//! [`KvStateMachine::open`] also keeps its latest snapshot in a file, written atomically, and
//! starts from it after a restart. A node whose log store purges entries behind snapshots needs
//! that: the purged entries exist nowhere else, and openraft refuses to start a node whose log
//! is purged past what its state machine holds. Pair it with [`LogStore`](crate::LogStore) for
//! a replicated map whose log is durable, and [`serve`] it on the [`net`](crate::net)
//! transport to [`Client`]s.

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::error::refused;
use crate::snapshot;

mod node;
pub use node::{Client, Message, Reply, serve};

/// A change to the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sets `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Several changes in one entry, applied in order: what a node proposes when client writes
    /// arrive while its previous proposal is in flight (see [`net`](crate::net)). Its response
    /// carries no previous value.
    Batch(Vec<Request>),
}

/// What applying a [`Request`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The key's value before the request.
    pub previous: Option<Vec<u8>>,
}

openraft::declare_raft_types!(
    /// The type configuration of the key-value map: [`Request`] entries, `u64` node ids,
    /// [`BasicNode`] addresses, snapshots in memory.
    pub KvConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<KvConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The node id of [`KvConfig`].
pub type NodeId = u64;

/// The map. Cloning is cheap; clones share it (the snapshot builder is a clone).
#[derive(Clone, Default)]
pub struct KvStateMachine {
    inner: Arc<Mutex<State>>,
    /// Where the latest snapshot is kept, if anywhere.
    dir: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    data: BTreeMap<String, Vec<u8>>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    current: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

impl KvStateMachine {
    /// An empty map that keeps nothing on disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map that keeps its latest snapshot in `dir` (created if missing), starting from the
    /// snapshot found there.
    ///
    /// # Errors
    ///
    /// The file system's; `InvalidData` for a snapshot file that does not verify.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let sm = Self {
            inner: Arc::default(),
            dir: Some(dir.clone()),
        };
        let Some((meta, bytes)) = snapshot::load(&dir)? else {
            return Ok(sm);
        };
        let data: BTreeMap<String, Vec<u8>> = postcard::from_bytes(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", dir.display()),
            )
        })?;
        {
            let mut st = sm.state();
            st.data = data;
            st.last_applied = meta.last_log_id;
            st.last_membership = meta.last_membership.clone();
            st.current = Some((meta, bytes));
        }
        Ok(sm)
    }

    /// Writes a snapshot to the snapshot file, atomically (temporary file synced, renamed,
    /// directory synced), if this map keeps one.
    async fn persist(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let failed = |e: &dyn std::fmt::Display| {
            refused(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                format!("cannot keep the snapshot: {e}"),
            )
        };
        snapshot::save(&dir, meta, data)
            .await
            .map_err(|e| failed(&e))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is whole before the lock is released.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.state().data.get(key).cloned()
    }

    /// How many keys the map holds.
    pub fn len(&self) -> usize {
        self.state().data.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.state().data.is_empty()
    }

    /// The last entry applied.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.state().last_applied
    }
}

impl RaftSnapshotBuilder<KvConfig> for KvStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<KvConfig>, StorageError<NodeId>> {
        let (meta, data) = {
            let mut st = self.state();
            let data = postcard::to_allocvec(&st.data).map_err(|e| {
                refused(
                    ErrorSubject::StateMachine,
                    ErrorVerb::Write,
                    format!("cannot encode the map: {e}"),
                )
            })?;
            st.snapshots_built += 1;
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.last_membership.clone(),
                snapshot_id: format!(
                    "{}-{}",
                    st.last_applied.map_or(0, |l| l.index),
                    st.snapshots_built
                ),
            };
            (meta, data)
        };
        self.persist(&meta, &data).await?;
        self.state().current = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Applies one request to the map; the key's previous value.
fn apply_one(data: &mut BTreeMap<String, Vec<u8>>, req: Request) -> Option<Vec<u8>> {
    match req {
        Request::Set { key, value } => data.insert(key, value),
        Request::Delete { key } => data.remove(&key),
        Request::Batch(reqs) => {
            for r in reqs {
                apply_one(data, r);
            }
            None
        }
    }
}

impl RaftStateMachine<KvConfig> for KvStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let st = self.state();
        Ok((st.last_applied, st.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<KvConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut st = self.state();
        let mut out = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(req) => Response {
                    previous: apply_one(&mut st.data, req),
                },
                EntryPayload::Membership(m) => {
                    st.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::default()
                }
            };
            out.push(response);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let data: BTreeMap<String, Vec<u8>> = postcard::from_bytes(&bytes).map_err(|e| {
            refused(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                format!("cannot decode the snapshot: {e}"),
            )
        })?;
        self.persist(meta, &bytes).await?;
        let mut st = self.state();
        st.data = data;
        st.last_applied = meta.last_log_id;
        st.last_membership = meta.last_membership.clone();
        st.current = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<KvConfig>>, StorageError<NodeId>> {
        Ok(self.state().current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
