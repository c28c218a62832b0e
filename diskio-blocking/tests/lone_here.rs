//! Where a lone sync runs: an `fsync` of data alone in flight runs on its caller's thread (a
//! multi-thread runtime's worker) and is done on its first poll; a full `fsync` always goes to
//! a pool worker, since it can take tens of ms after a large write.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use std::time::Duration;

use conformance::harness::lone_syncs_done_at_once;
use diskio::SyncKind;
use diskio_blocking::{BlockingDisk, BlockingOptions};

const ROUNDS: usize = 20;

/// How many of [`ROUNDS`] lone syncs of `kind` were done on their first poll. The spin is off,
/// so the caller does not wait for a sync handed to a worker before its first poll returns.
fn done_at_once(options: BlockingOptions, kind: SyncKind, name: &str) -> usize {
    let make = || BlockingDisk::new(options.spin(Duration::ZERO));
    lone_syncs_done_at_once(name, make, kind, ROUNDS).expect("the blocking backend runs anywhere")
}

#[test]
fn a_lone_data_sync_runs_on_the_callers_thread() {
    let done = done_at_once(BlockingOptions::new(), SyncKind::Data, "lone-data");
    assert_eq!(
        done, ROUNDS,
        "a lone fsync(Data) was not done on its first poll"
    );
}

#[test]
fn a_lone_full_sync_goes_to_a_worker() {
    let done = done_at_once(BlockingOptions::new(), SyncKind::All, "lone-all");
    assert!(
        done < ROUNDS,
        "all {ROUNDS} lone fsync(All) were done on their first poll: they ran on the caller's thread"
    );
}

#[test]
fn a_lone_data_sync_goes_to_a_worker_when_told() {
    let options = BlockingOptions::new().lone_sync_here(false);
    let done = done_at_once(options, SyncKind::Data, "lone-off");
    assert!(
        done < ROUNDS,
        "all {ROUNDS} lone fsync(Data) were done on their first poll with lone_sync_here off"
    );
}
