//! The suite catches broken backends: a backend whose `fsync` does nothing, and one whose
//! `write_sync_at` acknowledges before its sync completes, each fail named power-cut scenarios;
//! the working backend underneath passes them. Where FUSE cannot be mounted, every test here
//! reports a skip with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use conformance::fixtures::{Flaw, Flawed};
use conformance::harness::{self, Cx, Flavor, Outcome, ScratchDir};
use conformance::powercut::PowerCutFs;
use conformance::scenarios;
use diskio_blocking::BlockingDisk;

/// Why FUSE cannot be mounted here, if it cannot.
fn fuse_unavailable() -> Option<String> {
    let dir = ScratchDir::new("fixtures-probe");
    PowerCutFs::mount(dir.path()).err()
}

/// Runs `scenario` on the blocking backend broken by `flaw` (or working, with `None`);
/// whether it failed.
fn fails<F, Fut>(test: &str, flaw: Option<Flaw>, scenario: F) -> bool
where
    F: FnOnce(Arc<Cx<Flawed<BlockingDisk>>>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let make = || {
        let disk = BlockingDisk::with_defaults()?;
        // With no flaw, a wrapper that only delegates: the control.
        Ok(match flaw {
            Some(f) => Flawed::new(disk, f),
            None => Flawed::new(disk, Flaw::Control),
        })
    };
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        harness::run(test, Flavor::MultiThread, make, scenario);
    }))
    .is_err()
}

macro_rules! expect {
    ($name:ident, $scenario:ident, $flaw:expr, $fails:expr) => {
        #[test]
        fn $name() {
            if let Some(why) = fuse_unavailable() {
                harness::report_skip(stringify!($name), &why);
                return;
            }
            let failed = fails(stringify!($name), $flaw, |cx| async move {
                scenarios::$scenario(&cx).await
            });
            assert_eq!(
                failed,
                $fails,
                "{} on the {:?} backend: expected it to {}",
                stringify!($scenario),
                $flaw,
                if $fails { "fail" } else { "pass" }
            );
        }
    };
}

expect!(
    no_op_sync_loses_synced_data,
    power_cut_keeps_synced_data,
    Some(Flaw::NoOpSync),
    true
);
expect!(
    no_op_sync_loses_write_sync_at,
    power_cut_after_write_sync_at,
    Some(Flaw::NoOpSync),
    true
);
expect!(
    no_op_sync_hides_eio,
    power_cut_sync_error_reaches_caller,
    Some(Flaw::NoOpSync),
    true
);
expect!(
    no_op_sync_loses_direct_writes,
    power_cut_direct_writes,
    Some(Flaw::NoOpSync),
    true
);
expect!(
    no_op_sync_loses_the_renamed_file,
    power_cut_rename_then_sync_dir,
    Some(Flaw::NoOpSync),
    true
);
expect!(
    early_ack_loses_write_sync_at,
    power_cut_after_write_sync_at,
    Some(Flaw::EarlyAck),
    true
);
expect!(
    control_keeps_synced_data,
    power_cut_keeps_synced_data,
    None::<Flaw>,
    false
);
expect!(
    control_keeps_write_sync_at,
    power_cut_after_write_sync_at,
    None::<Flaw>,
    false
);
expect!(
    control_reports_eio,
    power_cut_sync_error_reaches_caller,
    None::<Flaw>,
    false
);
expect!(
    early_ack_keeps_fsynced_data,
    power_cut_keeps_synced_data,
    Some(Flaw::EarlyAck),
    false
);
