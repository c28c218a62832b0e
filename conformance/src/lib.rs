//! # conformance
//!
//! The diskio conformance suite: what it means to be a [`DiskIo`](diskio::DiskIo) backend,
//! written down as scenarios that run against any backend.
//!
//! - [`scenarios`]: one generic `async fn` per behaviour of the contract (round trips at many
//!   sizes, end of file, short reads, vectored writes past `IOV_MAX`, `O_DIRECT` alignment, bad
//!   ids and paths, buffers given back on errors, 1,000 concurrent operations, futures dropped
//!   mid-flight, ...).
//! - [`model`]: a model-based property test against an in-memory model file.
//! - [`suite!`]: turns all of them into one `#[test]` each for a backend constructor.
//! - Fault-injecting disks to test code built on `DiskIo`: [`FailingDisk`] (fails the Nth write
//!   or sync; slows the writes to chosen files) and [`CrashDisk`] (simulated power loss with torn sectors, from a printed seed).
//!
//! Scenarios that cannot run on a machine (no `O_DIRECT` on the filesystem, no way to forbid a file as
//! root, a backend that reports `Unsupported`) print `SKIPPED <test>: <reason>` to stderr, past
//! the test harness's capture, and pass: never a silent pass.
//!
//! ## Testing your own backend
//!
//! Put this in `tests/conformance.rs` of your backend's crate (with `conformance` as a
//! dev-dependency) and run `cargo test`:
//!
//! ```no_run
//! // One #[test] per scenario, each with a fresh backend from this expression.
//! conformance::suite!(diskio_blocking::BlockingDisk::with_defaults());
//! # fn main() {}
//! ```
//!
//! The expression must evaluate to `diskio::Result<YourDisk>`; an `Err(Error::Unsupported)`
//! skips every test with its reason. Here is the same for the blocking backend, run as a
//! doc test on one scenario:
//!
//! ```
//! use conformance::harness::{self, Flavor};
//!
//! harness::run("doc_round_trip", Flavor::MultiThread, diskio_blocking::BlockingDisk::with_defaults, |cx| async move {
//!     conformance::scenarios::read_at_and_past_eof(&cx).await
//! });
//! ```
//!
//! A backend built from the pieces in `diskio::backend` (the admission step, the table of open
//! files, the stats, the shared option checks) refuses bad requests, counts operations and
//! explains a refused io_uring exactly as the shipped backends do; the suite then checks the
//! rest.
//!
//! Scratch files go to `$DISKIO_TEST_DIR` (default: the system temporary directory). Set
//! `DISKIO_PROPTEST_CASES` for more model cases and `DISKIO_SEED` to replay a seeded scenario.

#![forbid(unsafe_code)]

pub mod crash;
pub mod failing;
pub mod fixtures;
pub mod harness;
pub mod model;
pub mod powercut;
mod rng;
#[allow(clippy::expect_used, clippy::unwrap_used)] // scenarios are tests: a failed check panics
pub mod scenarios;

pub use crash::{CrashDisk, CrashMode};
pub use failing::{FailingDisk, FaultMode, FaultPlan, FaultTarget};
pub use rng::{Rng, seed_from_env};

/// Expands to one `#[test]` per conformance scenario, plus the model-based property test and a
/// current-thread runtime check, for the backend built by `$make` (an expression of type
/// `diskio::Result<impl DiskIo>`, evaluated afresh for every test).
#[macro_export]
macro_rules! suite {
    ($make:expr) => {
        $crate::suite!(@scenarios $make;
            round_trip_sizes,
            read_at_and_past_eof,
            short_read_at_tail,
            stats_are_counted,
            writev_order_and_offsets,
            writev_more_than_iov_max,
            buffers_returned_on_errors,
            unknown_and_closed_file_id,
            open_missing_path,
            open_directory,
            open_without_permission,
            sync_kinds,
            preallocate_then_len,
            directory_entries,
            set_len_down_and_up,
            concurrent_ops_one_file,
            drop_in_flight_then_read_back,
            dropped_ops_are_counted,
            direct_round_trip,
            direct_misaligned_offset,
            direct_misaligned_length,
            direct_misaligned_buffer,
            many_more_in_flight_than_ring,
            ten_thousand_ops_half_dropped,
            linked_write_fails,
            power_cut_keeps_synced_data,
            power_cut_may_drop_unsynced_data,
            power_cut_after_write_sync_at,
            power_cut_rename_then_sync_dir,
            power_cut_direct_writes,
            power_cut_sync_error_reaches_caller,
            power_cut_created_directories,
        );

        #[test]
        fn shutdown_with_ops_in_flight() {
            $crate::harness::run(
                "shutdown_with_ops_in_flight",
                $crate::harness::Flavor::MultiThread,
                || $make,
                |cx| async move {
                    $crate::scenarios::shutdown_with_ops_in_flight(&cx, || $make).await
                },
            );
        }

        #[test]
        fn model_random_ops() {
            $crate::model::check("model_random_ops", || $make);
        }

        #[test]
        fn current_thread_runtime() {
            $crate::harness::run(
                "current_thread_runtime",
                $crate::harness::Flavor::CurrentThread,
                || $make,
                |cx| async move {
                    let first = $crate::scenarios::short_read_at_tail(&cx).await;
                    let second = $crate::scenarios::concurrent_ops_one_file(&cx).await;
                    if first == $crate::harness::Outcome::Passed { second } else { first }
                },
            );
        }
    };
    (@scenarios $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::harness::run(
                    stringify!($name),
                    $crate::harness::Flavor::MultiThread,
                    || $make,
                    |cx| async move { $crate::scenarios::$name(&cx).await },
                );
            }
        )*
    };
}
