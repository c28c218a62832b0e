//! The store's crash proof (openraft's suite never reopens a store): a raft workload on
//! `CrashDisk` (appends flushed through the callback, truncations by a new leader, purges,
//! a purge past the end as after a snapshot, votes), crashed right after every one of its I/O
//! operations in turn, under several seeded fates of the unsynced writes (sectors written
//! atomically or not at all, or torn). After each crash the
//! store reopens with every flushed entry and every saved vote, no truncated entry back, and
//! its log contiguous.
//!
//! `DISKIO_CRASH_STATES` sets how many crash states to reach (default 3,000); `DISKIO_SEED`
//! replays a run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use std::collections::BTreeMap;

use conformance::crash::Sweep;
use conformance::{CrashDisk, CrashMode, Rng};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use wal::WalOptions;
use wal_raft::LogStore;
use wal_raft::kv::{KvConfig, Request};

const NODE: u64 = 1;

fn options() -> WalOptions {
    WalOptions::new()
        .segment_bytes(64 << 10)
        .record_max(4 << 10)
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, NODE), index)
}

/// The entry at `index` written in `term`: a different value for every (index, term).
fn entry(term: u64, index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request::Set {
            key: format!("k{}", index % 50),
            value: format!("{index}@{term}")
                .repeat(1 + (index as usize * 7) % 40)
                .into_bytes(),
        }),
    }
}

/// The store as the workload was told it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    vote: Option<u64>,
    purged: Option<(u64, u64)>,
    /// index → term of the entries in the log.
    entries: BTreeMap<u64, u64>,
    /// The index the next append goes to.
    next: u64,
    term: u64,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Vote,
    Append(u64),
    /// Truncate the last `k` entries (a new leader's conflicting suffix).
    Truncate(u64),
    /// Purge all but the last `k` entries.
    Purge(u64),
    /// Purge `k` indexes past the end (a snapshot installed).
    PurgePast(u64),
}

fn plan(rng: &mut Rng) -> Vec<Op> {
    let mut ops = vec![Op::Vote];
    for i in 1..140u64 {
        ops.push(match i % 23 {
            5 => Op::Truncate(1 + rng.below(6)),
            6 => Op::Vote,
            12 => Op::Purge(5 + rng.below(10)),
            19 if i > 60 && i < 90 => Op::PurgePast(1 + rng.below(20)),
            _ => Op::Append(1 + rng.below(4)),
        });
    }
    ops
}

async fn open(disk: &CrashDisk) -> LogStore<KvConfig, CrashDisk> {
    LogStore::open(disk.clone(), "store", options())
        .await
        .unwrap()
}

#[derive(Clone)]
struct Done {
    acked: Model,
    in_flight: Model,
}

async fn run(disk: &CrashDisk, ops: &[Op]) -> Done {
    let mut store = open(disk).await;
    let mut m = Model {
        vote: None,
        purged: None,
        entries: BTreeMap::new(),
        next: 0,
        term: 1,
    };
    let mut done = None;
    for &op in ops {
        let before = m.clone();
        match op {
            Op::Vote => {
                m.term += 1;
                store.save_vote(&Vote::new(m.term, NODE)).await.unwrap();
                m.vote = Some(m.term);
            }
            Op::Append(n) => {
                let batch: Vec<_> = (m.next..m.next + n).map(|i| entry(m.term, i)).collect();
                store.blocking_append(batch).await.unwrap();
                for i in m.next..m.next + n {
                    m.entries.insert(i, m.term);
                }
                m.next += n;
            }
            Op::Truncate(k) => {
                let Some((&last, _)) = m.entries.last_key_value() else {
                    continue;
                };
                let from = last + 1 - k.min(m.entries.len() as u64);
                store
                    .truncate(log_id(m.entries[&from], from))
                    .await
                    .unwrap();
                m.entries.retain(|&i, _| i < from);
                m.next = from;
                m.term += 1;
            }
            Op::Purge(k) => {
                if m.entries.len() as u64 <= k {
                    continue;
                }
                let upto = m.next - 1 - k;
                store.purge(log_id(m.entries[&upto], upto)).await.unwrap();
                m.entries.retain(|&i, _| i > upto);
                m.purged = Some((
                    m.entries
                        .get(&upto)
                        .copied()
                        .unwrap_or(before.entries[&upto]),
                    upto,
                ));
            }
            Op::PurgePast(k) => {
                let upto = m.next + k - 1;
                store.purge(log_id(m.term, upto)).await.unwrap();
                m.entries.clear();
                m.purged = Some((m.term, upto));
                m.next = upto + 1;
            }
        }
        if done.is_none() && disk.is_frozen() {
            done = Some(Done {
                acked: before,
                in_flight: m.clone(),
            });
        }
    }
    drop(store);
    done.unwrap_or(Done {
        acked: m.clone(),
        in_flight: m,
    })
}

/// What a reopened store holds.
#[derive(Debug)]
struct Found {
    vote: Option<u64>,
    purged: Option<(u64, u64)>,
    last: Option<(u64, u64)>,
    /// (index, term) of the entries read back, each checked to be the entry written then.
    entries: Vec<(u64, u64)>,
}

async fn found(disk: CrashDisk, what: &str) -> Found {
    let mut store: LogStore<KvConfig, CrashDisk> = LogStore::open(disk, "store", options())
        .await
        .unwrap_or_else(|e| panic!("{what}: the store does not reopen: {e}"));
    let vote = store.read_vote().await.unwrap().map(|v| v.leader_id.term);
    let state = store.get_log_state().await.unwrap();
    let entries: Vec<(u64, u64)> = store
        .try_get_log_entries(0..)
        .await
        .unwrap_or_else(|e| panic!("{what}: reading back: {e}"))
        .into_iter()
        .map(|e| {
            let (t, i) = (e.log_id.leader_id.term, e.log_id.index);
            assert_eq!(
                format!("{:?}", e.payload),
                format!("{:?}", entry(t, i).payload),
                "{what}: entry {i} is not the one written"
            );
            (i, t)
        })
        .collect();
    Found {
        vote,
        purged: state
            .last_purged_log_id
            .map(|l| (l.leader_id.term, l.index)),
        last: state.last_log_id.map(|l| (l.leader_id.term, l.index)),
        entries,
    }
}

/// Whether what was found is the store as model `m` has it, allowing a prefix of an append in
/// flight (entries past `m`'s end in `m`'s term).
fn agrees(f: &Found, m: &Model) -> bool {
    f.vote == m.vote
        && f.purged == m.purged
        && f.entries.iter().all(|&(i, t)| {
            m.entries
                .get(&i)
                .map_or(i >= m.next && t == m.term, |&mt| mt == t)
        })
}

fn check(f: &Found, done: &Done, what: &str) {
    let (a, b) = (&done.acked, &done.in_flight);
    for w in f.entries.windows(2) {
        assert_eq!(w[0].0 + 1, w[1].0, "{what}: the log is contiguous: {f:?}");
    }
    if let (Some(first), Some(p)) = (f.entries.first(), f.purged) {
        assert_eq!(
            first.0,
            p.1 + 1,
            "{what}: the log starts right after the purged index"
        );
    }
    assert!(
        agrees(f, a) || agrees(f, b),
        "{what}: the reopened store is neither the acknowledged one nor the one being made (a \
         truncated entry back, a vote lost, a purge undone): found {f:?}, acknowledged {a:?}, in \
         flight {b:?}"
    );
    // Every entry flushed in both is there (a truncation in flight may have dropped the rest).
    let kept = |m: &Model| m.entries.last_key_value().map(|(&i, _)| i);
    if let Some(need) = kept(a).min(kept(b)) {
        let have = f.last.map(|l| l.1);
        assert!(
            have >= Some(need),
            "{what}: flushed entries lost: last {have:?}, needed {need} ({f:?})"
        );
    }
}

#[test]
fn every_crash_point_of_a_raft_workload_keeps_what_was_flushed_and_saved() {
    let target = std::env::var("DISKIO_CRASH_STATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000u64);
    let seed = conformance::seed_from_env("DISKIO_SEED");
    let name = "raft store power-loss sweep".to_owned();
    eprintln!("{name}: DISKIO_SEED={seed}, {target} crash states");
    let mut rng = Rng::new(seed);
    let ops = plan(&mut rng);
    // The log writes with `O_DIRECT` (the default), rewriting the partly filled block it ended
    // in: safe on devices with atomic sectors, which these modes model (as in the WAL's sweep).
    let modes = [
        CrashMode::RandomAtomic,
        CrashMode::TearAll,
        CrashMode::DropAll,
        CrashMode::KeepAll,
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sweep = Sweep {
        name: name.clone(),
        target,
        seed,
        modes: &modes,
    };
    let report = rt.block_on(sweep.run(
        |disk| {
            let ops = &ops;
            async move { run(&disk, ops).await }
        },
        |done, _| async move {
            assert!(
                done.acked.purged.is_some() && done.acked.next > 100,
                "the workload purges and grows: {:?}",
                done.acked
            );
        },
        |crashed, done, what| async move {
            let f = found(crashed, &what).await;
            check(&f, &done, &what);
        },
    ));
    eprintln!(
        "{name}: {} crash states at {} of {} crash points: every flushed entry and saved vote \
         kept, no truncated entry back",
        report.states, report.reached, report.points
    );
}
