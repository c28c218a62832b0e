//! openraft's own storage test suite (`openraft::testing::Suite`), every case, against the
//! store on real files (the blocking backend) and on the in-memory crash-model disk.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use conformance::CrashDisk;
use conformance::harness::ScratchDir;
use diskio_blocking::BlockingDisk;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use wal::WalOptions;
use wal_raft::LogStore;
use wal_raft::kv::{KvConfig, KvStateMachine, NodeId};

/// Small segments, so the suite's logs rotate and purges remove whole segments.
fn options() -> WalOptions {
    WalOptions::new()
        .segment_bytes(64 << 10)
        .record_max(4 << 10)
}

fn failed(e: wal_raft::Error) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

struct OnFiles;

impl StoreBuilder<KvConfig, LogStore<KvConfig, BlockingDisk>, KvStateMachine, ScratchDir>
    for OnFiles
{
    async fn build(
        &self,
    ) -> Result<(ScratchDir, LogStore<KvConfig, BlockingDisk>, KvStateMachine), StorageError<NodeId>>
    {
        let dir = ScratchDir::new("raft-suite");
        let disk = BlockingDisk::with_defaults().expect("the blocking backend");
        let store = LogStore::open(disk, dir.path().join("store"), options())
            .await
            .map_err(failed)?;
        Ok((dir, store, KvStateMachine::new()))
    }
}

struct InMemory;

impl StoreBuilder<KvConfig, LogStore<KvConfig, CrashDisk>, KvStateMachine> for InMemory {
    async fn build(
        &self,
    ) -> Result<((), LogStore<KvConfig, CrashDisk>, KvStateMachine), StorageError<NodeId>> {
        let disk = CrashDisk::new().strict_directories();
        let store = LogStore::open(disk, "store", options())
            .await
            .map_err(failed)?;
        Ok(((), store, KvStateMachine::new()))
    }
}

#[test]
fn openraft_storage_suite_on_files() {
    Suite::test_all(OnFiles).unwrap();
}

#[test]
fn openraft_storage_suite_on_the_crash_model_disk() {
    Suite::test_all(InMemory).unwrap();
}
