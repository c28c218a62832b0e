//! Where a lone sync runs: an `fsync` of data alone in flight runs on its caller's thread (a
//! multi-thread runtime's worker) and is done on its first poll; a full `fsync` always goes to
//! the executor, since it can take tens of ms after a large write.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use std::time::Duration;

use conformance::harness::lone_syncs_done_at_once;
use diskio::SyncKind;
use diskio_uring::{UringDisk, UringOptions};

const ROUNDS: usize = 20;

/// How many of [`ROUNDS`] lone syncs of `kind` were done on their first poll; `None` (a
/// visible skip) without io_uring. The spin is off, so the caller does not wait for a sync
/// handed to the executor before its first poll returns.
fn done_at_once(options: UringOptions, kind: SyncKind, name: &str) -> Option<usize> {
    let make = || UringDisk::new(options.spin(Duration::ZERO));
    lone_syncs_done_at_once(name, make, kind, ROUNDS)
}

#[test]
fn a_lone_data_sync_runs_on_the_callers_thread() {
    if let Some(done) = done_at_once(UringOptions::new(), SyncKind::Data, "lone-data") {
        assert_eq!(
            done, ROUNDS,
            "a lone fsync(Data) was not done on its first poll"
        );
    }
}

#[test]
fn a_lone_full_sync_goes_to_the_executor() {
    if let Some(done) = done_at_once(UringOptions::new(), SyncKind::All, "lone-all") {
        assert!(
            done < ROUNDS,
            "all {ROUNDS} lone fsync(All) were done on their first poll: they ran on the caller's thread"
        );
    }
}

#[test]
fn a_lone_data_sync_goes_to_the_executor_when_told() {
    let options = UringOptions::new().lone_sync_here(false);
    if let Some(done) = done_at_once(options, SyncKind::Data, "lone-off") {
        assert!(
            done < ROUNDS,
            "all {ROUNDS} lone fsync(Data) were done on their first poll with lone_sync_here off"
        );
    }
}
