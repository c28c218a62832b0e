//! The replicated state machine of a clustered node: raft entries applied to the node's own
//! topics.
//!
//! Every node applies the same entries in the same order, so each partition receives the same
//! records in the same order on every node, and gets the same LSNs. A record is stored with its
//! place in the raft log in front: the raft index of its entry and its position in the entry
//! (a batch carries many), 12 bytes little-endian. After a restart openraft applies again the
//! entries after the last snapshot, and a partition skips each record whose place is not past
//! the last one it holds. That makes applying idempotent without a sync per entry.
//!
//! A snapshot here is a watermark, not a copy of the data: building one syncs every partition,
//! then records the last applied entry, the topics and the place of each partition's last
//! record. The
//! raft log behind it can then be purged (openraft keeps [`LOG_KEPT`](super::LOG_KEPT) entries
//! more). A node that falls so far behind that its leader sends it a snapshot cannot install
//! one that names records it lacks: it stops with an error that says so (see the README).

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use wal::{Lsn, WalError};

use crate::topics::{TopicError, Topics};

/// What a clustered node replicates: one change to the topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Creates a topic (a no-op if it exists with as many partitions).
    CreateTopic {
        /// Its name.
        name: String,
        /// Its partition count.
        partitions: usize,
    },
    /// Appends a record to a partition.
    Append {
        /// The topic.
        topic: String,
        /// The partition, chosen by the node that took the request.
        partition: usize,
        /// The record.
        data: Vec<u8>,
    },
    /// Several commands in one entry, applied in order (what a node proposes when requests
    /// arrive while its previous proposal is in flight).
    Batch(Vec<Command>),
}

/// What applying a [`Command`] gives back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub enum Outcome {
    /// Nothing (a blank or membership entry).
    #[default]
    None,
    /// The topic was created (`true`) or existed as asked (`false`).
    Created(bool),
    /// The record's place.
    Appended {
        /// Its partition.
        partition: usize,
        /// Its LSN there.
        lsn: Lsn,
    },
    /// Applied before this restart: the partition holds it already.
    Replayed,
    /// Refused, on every node alike: an HTTP status and why.
    Failed {
        /// The status.
        status: u16,
        /// Why.
        error: String,
    },
    /// The outcomes of a [`Command::Batch`].
    Batch(Vec<Outcome>),
}

openraft::declare_raft_types!(
    /// The type configuration of a clustered logd: [`Command`] entries, `u64` node ids,
    /// [`BasicNode`] addresses (each node's raft transport), snapshots in memory.
    pub LogdConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<LogdConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

impl wal_raft::net::Batching for LogdConfig {
    fn batch(writes: Vec<Command>) -> Command {
        Command::Batch(writes)
    }

    fn unbatch(response: Outcome, n: usize) -> Vec<Outcome> {
        match response {
            Outcome::Batch(v) if v.len() == n => v,
            other => vec![other; n],
        }
    }
}

/// Bytes in front of every record of a clustered node: its entry's raft index (`u64`) and its
/// position in the entry (`u32`).
pub const PREFIX: usize = 12;

/// A record's place in the raft log: its entry's index, its position in the entry.
type Place = (u64, u32);

fn place_of(record: &[u8]) -> Option<Place> {
    let index = u64::from_le_bytes(record.get(..8)?.try_into().ok()?);
    let pos = u32::from_le_bytes(record.get(8..PREFIX)?.try_into().ok()?);
    Some((index, pos))
}

/// A snapshot's data: the topics and the place of each partition's last record.
#[derive(Serialize, Deserialize)]
struct Image {
    topics: Vec<(String, usize)>,
    cursors: Vec<(String, usize, Place)>,
}

#[derive(Default)]
struct State {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The place of the last record each partition holds.
    cursors: BTreeMap<(String, usize), Place>,
    current: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    built: u64,
}

/// The state machine. Clones share it (the snapshot builder is a clone).
#[derive(Clone)]
pub struct Machine {
    topics: Arc<Topics>,
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

fn storage(subject: ErrorSubject<u64>, verb: ErrorVerb, why: String) -> StorageError<u64> {
    StorageIOError::new(subject, verb, AnyError::error(why)).into()
}

fn failed(status: u16, e: &dyn std::fmt::Display) -> Outcome {
    Outcome::Failed {
        status,
        error: e.to_string(),
    }
}

impl Machine {
    /// The machine over `topics`, its snapshot kept in `dir`: starts from the snapshot found
    /// there and from the last record of each partition.
    ///
    /// # Errors
    ///
    /// The file system's; `InvalidData` for a snapshot that does not verify or a record
    /// without its raft index.
    pub async fn open(topics: Arc<Topics>, dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        std::fs::create_dir_all(dir)?;
        let mut state = State::default();
        if let Some((meta, data)) = wal_raft::snapshot::load(dir)? {
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.current = Some((meta, data));
        }
        for topic in topics.all().await {
            for p in 0..topic.log.len() {
                let Some(log) = topic.log.partition(p) else {
                    continue;
                };
                let next = log.next_lsn();
                if next <= log.first_lsn() {
                    continue;
                }
                let Some(rec) = log.reader(next - 1).next().await? else {
                    continue;
                };
                let place = place_of(&rec.data).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "topic {:?} partition {p}: record {} carries no raft index \
                                 (was this data directory written by a single node?)",
                            topic.name, rec.lsn
                        ),
                    )
                })?;
                state.cursors.insert((topic.name.clone(), p), place);
            }
        }
        Ok(Self {
            topics,
            dir: dir.to_path_buf(),
            state: Arc::new(Mutex::new(state)),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is whole before the lock is released.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one command that is not a batch; the partitions it appended to, with the last
    /// LSN, go in `touched`.
    async fn apply_one(
        &self,
        place: Place,
        cmd: Command,
        touched: &mut BTreeMap<(String, usize), Lsn>,
    ) -> Result<Outcome, StorageError<u64>> {
        match cmd {
            Command::CreateTopic { name, partitions } => {
                match self.topics.create(&name, partitions).await {
                    Ok(created) => Ok(Outcome::Created(created)),
                    Err(e @ (TopicError::BadName(_) | TopicError::BadPartitions { .. })) => {
                        Ok(failed(400, &e))
                    }
                    Err(e @ TopicError::Conflict { .. }) => Ok(failed(409, &e)),
                    Err(e) => Err(storage(
                        ErrorSubject::StateMachine,
                        ErrorVerb::Write,
                        format!("creating topic {name:?}: {e}"),
                    )),
                }
            }
            Command::Append {
                topic,
                partition,
                data,
            } => {
                let Some(t) = self.topics.get(&topic).await else {
                    return Ok(failed(404, &format_args!("no topic {topic:?}")));
                };
                let Some(log) = t.log.partition(partition) else {
                    return Ok(failed(
                        404,
                        &format_args!("topic {topic:?} has no partition {partition}"),
                    ));
                };
                let key = (topic, partition);
                if self.state().cursors.get(&key).is_some_and(|&c| place <= c) {
                    return Ok(Outcome::Replayed);
                }
                let mut framed = Vec::with_capacity(PREFIX + data.len());
                framed.extend_from_slice(&place.0.to_le_bytes());
                framed.extend_from_slice(&place.1.to_le_bytes());
                framed.extend_from_slice(&data);
                match log.append_nowait(&framed).await {
                    Ok(lsn) => {
                        self.state().cursors.insert(key.clone(), place);
                        touched.insert(key, lsn);
                        Ok(Outcome::Appended { partition, lsn })
                    }
                    Err(e @ WalError::RecordTooLarge { .. }) => Ok(failed(413, &e)),
                    // A log that failed stops this node rather than let it diverge.
                    Err(e) => Err(storage(
                        ErrorSubject::StateMachine,
                        ErrorVerb::Write,
                        format!("topic {:?} partition {partition}: {e}", key.0),
                    )),
                }
            }
            Command::Batch(_) => Ok(failed(400, &"a batch inside a batch")),
        }
    }
}

impl RaftSnapshotBuilder<LogdConfig> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<LogdConfig>, StorageError<u64>> {
        // What was applied up to here is appended (not yet durable): capture it, sync, keep.
        let (last_applied, membership, cursors, built) = {
            let mut st = self.state();
            st.built += 1;
            (
                st.last_applied,
                st.membership.clone(),
                st.cursors.clone(),
                st.built,
            )
        };
        let topics = self.topics.all().await;
        self.topics.sync().await.map_err(|e| {
            storage(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                format!("syncing the topics: {e}"),
            )
        })?;
        let image = Image {
            topics: topics
                .iter()
                .map(|t| (t.name.clone(), t.log.len()))
                .collect(),
            cursors: cursors.into_iter().map(|((t, p), i)| (t, p, i)).collect(),
        };
        let data = postcard::to_allocvec(&image)
            .map_err(|e| storage(ErrorSubject::StateMachine, ErrorVerb::Write, e.to_string()))?;
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: format!("{}-{built}", last_applied.map_or(0, |l| l.index)),
        };
        wal_raft::snapshot::save(&self.dir, &meta, &data)
            .await
            .map_err(|e| {
                storage(
                    ErrorSubject::Snapshot(Some(meta.signature())),
                    ErrorVerb::Write,
                    e.to_string(),
                )
            })?;
        self.state().current = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<LogdConfig> for Machine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let st = self.state();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<LogdConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut touched = BTreeMap::new();
        for entry in entries {
            let index = entry.log_id.index;
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::None,
                EntryPayload::Membership(m) => {
                    self.state().membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::None
                }
                EntryPayload::Normal(Command::Batch(cmds)) => {
                    let mut v = Vec::with_capacity(cmds.len());
                    for (pos, cmd) in cmds.into_iter().enumerate() {
                        let place = (index, u32::try_from(pos).unwrap_or(u32::MAX));
                        v.push(self.apply_one(place, cmd, &mut touched).await?);
                    }
                    Outcome::Batch(v)
                }
                EntryPayload::Normal(cmd) => self.apply_one((index, 0), cmd, &mut touched).await?,
            };
            self.state().last_applied = Some(entry.log_id);
            out.push(outcome);
        }
        // Readable here once answered: wait for the partitions' group commits.
        for ((topic, p), lsn) in touched {
            let Some(t) = self.topics.get(&topic).await else {
                continue;
            };
            if let Some(log) = t.log.partition(p) {
                log.wait_durable(lsn).await.map_err(|e| {
                    storage(
                        ErrorSubject::StateMachine,
                        ErrorVerb::Write,
                        format!("topic {topic:?} partition {p}: {e}"),
                    )
                })?;
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let bytes = snapshot.into_inner();
        let image: Image = postcard::from_bytes(&bytes)
            .map_err(|e| storage(subject(), ErrorVerb::Read, e.to_string()))?;
        // The snapshot names records; this node can take it only if it holds them already.
        let mut missing = Vec::new();
        for (name, partitions) in &image.topics {
            match self.topics.get(name).await {
                Some(t) if t.log.len() == *partitions => {}
                _ => missing.push(format!("topic {name:?}")),
            }
        }
        {
            let st = self.state();
            for (name, p, place) in &image.cursors {
                let have = st
                    .cursors
                    .get(&(name.clone(), *p))
                    .copied()
                    .unwrap_or((0, 0));
                if have < *place {
                    missing.push(format!(
                        "{name:?} partition {p}: entries {}..={}",
                        have.0 + 1,
                        place.0
                    ));
                }
            }
        }
        if !missing.is_empty() {
            let shown = missing.len().min(8);
            return Err(storage(
                subject(),
                ErrorVerb::Write,
                format!(
                    "this node is too far behind: the leader purged the raft entries it lacks \
                     and a logd snapshot carries no records ({} missing: {}); restore this \
                     node's data directory from a peer's",
                    missing.len(),
                    missing[..shown].join(", ")
                ),
            ));
        }
        wal_raft::snapshot::save(&self.dir, meta, &bytes)
            .await
            .map_err(|e| storage(subject(), ErrorVerb::Write, e.to_string()))?;
        let mut st = self.state();
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.current = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<LogdConfig>>, StorageError<u64>> {
        Ok(self.state().current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
