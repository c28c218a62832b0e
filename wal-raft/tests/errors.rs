//! Bad input and damage: a `StorageError` (or an open error) naming what and where, never a
//! panic; and what a reopened store keeps.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use conformance::CrashDisk;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use wal::{Wal, WalOptions};
use wal_raft::kv::{KvConfig, Request};
use wal_raft::{Error, LogStore};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Request::Set {
            key: format!("k{index}"),
            value: vec![index as u8; 10],
        }),
    }
}

async fn store(disk: &CrashDisk) -> LogStore<KvConfig, CrashDisk> {
    LogStore::open(disk.clone(), "store", WalOptions::new())
        .await
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_index_gap_is_refused_and_the_log_stays_usable() {
    rt().block_on(async {
        let disk = CrashDisk::new();
        let mut s = store(&disk).await;
        s.blocking_append((0..4).map(entry)).await.unwrap();
        let err = s.blocking_append([entry(6)]).await.unwrap_err().to_string();
        assert!(
            err.contains("entry 6 does not follow the log's last index 3"),
            "{err}"
        );
        s.blocking_append([entry(4)]).await.unwrap();
        assert_eq!(s.try_get_log_entries(0..).await.unwrap().len(), 5);
    });
}

#[test]
fn a_truncation_below_the_purged_prefix_is_refused() {
    rt().block_on(async {
        let disk = CrashDisk::new();
        let mut s = store(&disk).await;
        s.blocking_append((0..10).map(entry)).await.unwrap();
        s.purge(log_id(1, 4)).await.unwrap();
        let err = s.truncate(log_id(1, 3)).await.unwrap_err().to_string();
        assert!(
            err.contains("cannot truncate from index 3: entries up to 4 are purged"),
            "{err}"
        );
        let got: Vec<u64> = s
            .try_get_log_entries(0..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, (5..10).collect::<Vec<_>>());
    });
}

#[test]
fn a_reopened_store_has_its_vote_entries_and_purge_point() {
    rt().block_on(async {
        let disk = CrashDisk::new();
        {
            let mut s = store(&disk).await;
            s.save_vote(&Vote::new(7, 2)).await.unwrap();
            s.blocking_append((0..20).map(entry)).await.unwrap();
            s.truncate(log_id(1, 15)).await.unwrap();
            s.purge(log_id(1, 9)).await.unwrap();
        }
        let mut s = store(&disk).await;
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(7, 2)));
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 9)));
        assert_eq!(state.last_log_id, Some(log_id(1, 14)));
        let got: Vec<u64> = s
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, (10..15).collect::<Vec<_>>());
        // Purged past the end: the log continues after it, across a reopen too.
        s.purge(log_id(2, 30)).await.unwrap();
        s.blocking_append([Entry {
            log_id: log_id(2, 31),
            payload: EntryPayload::Blank,
        }])
        .await
        .unwrap();
        drop(s);
        let mut s = store(&disk).await;
        let state = s.get_log_state().await.unwrap();
        assert_eq!(
            (state.last_purged_log_id, state.last_log_id),
            (Some(log_id(2, 30)), Some(log_id(2, 31)))
        );
        assert_eq!(s.try_get_log_entries(0..).await.unwrap().len(), 1);
    });
}

#[test]
fn a_record_that_is_not_an_entry_is_an_error_naming_its_index() {
    rt().block_on(async {
        let disk = CrashDisk::new();
        drop(store(&disk).await);
        // Records written behind the store's back: one that does not decode, at index 0.
        let (log, _) = Wal::open(disk.clone(), "store/log", WalOptions::new())
            .await
            .unwrap();
        log.append(b"\xff\xff\xff not an entry").await.unwrap();
        log.close().await.unwrap();
        match LogStore::<KvConfig, CrashDisk>::open(disk.clone(), "store", WalOptions::new()).await
        {
            Err(Error::Codec { what, .. }) => assert_eq!(what, "the entry at log index 0"),
            Err(e) => panic!("expected a codec error, got {e}"),
            Ok(_) => panic!("a store whose last record is not an entry opened"),
        }
    });
}

#[test]
fn an_entry_at_the_wrong_index_is_an_error() {
    rt().block_on(async {
        let disk = CrashDisk::new();
        drop(store(&disk).await);
        let (log, _) = Wal::open(disk.clone(), "store/log", WalOptions::new())
            .await
            .unwrap();
        // LSN 1 is index 0, but this entry says index 5.
        log.append(&postcard::to_allocvec(&entry(5)).unwrap())
            .await
            .unwrap();
        log.close().await.unwrap();
        match LogStore::<KvConfig, CrashDisk>::open(disk, "store", WalOptions::new()).await {
            Err(Error::Misplaced { index: 0, found: 5 }) => {}
            Err(e) => panic!("expected Misplaced, got {e}"),
            Ok(_) => panic!("a store with a misplaced entry opened"),
        }
    });
}
