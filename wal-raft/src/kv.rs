//! A key-value state machine for the examples and tests: an in-memory map, with snapshots that
//! are the whole map encoded.
//!
//! It keeps nothing on disk: after a restart it starts empty and openraft re-applies the log
//! (or installs a snapshot from the leader). Pair it with [`LogStore`](crate::LogStore) for a
//! replicated map whose log is durable.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::error::refused;

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
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
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
        st.current = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
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
                EntryPayload::Normal(Request::Set { key, value }) => Response {
                    previous: st.data.insert(key, value),
                },
                EntryPayload::Normal(Request::Delete { key }) => Response {
                    previous: st.data.remove(&key),
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
