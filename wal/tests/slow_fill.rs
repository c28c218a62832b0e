//! A rotation that comes before the next segment is zero-filled does not wait for the zeros:
//! the fill stops, the rest of the segment is preallocated, and every record reads back, also
//! after the log is reopened. The disk here writes the prepared segment slowly
//! (`FailingDisk::slow_writes`), so the log always catches up with its fill.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::time::Duration;

use conformance::FailingDisk;
use wal::{Wal, WalOptions};

/// The record with LSN `lsn`: 500 to 1,499 bytes.
fn payload(lsn: u64) -> Vec<u8> {
    common::payload(lsn ^ 0x511F, 500 + (lsn as usize * 37) % 1000)
}

fn rotation_cuts_a_slow_fill_short(backend: &str) {
    let Some(inner) = common::backend(backend) else {
        return;
    };
    let label = format!("slow-fill-{}", backend.replace('+', "-"));
    let scratch = conformance::harness::ScratchDir::new(&label);
    let dir = scratch.path().join("log");
    let direct = backend.ends_with("+direct");
    if direct {
        if let Some(reason) = conformance::harness::direct_io_refused(scratch.path()) {
            conformance::harness::report_skip(&label, &reason);
            return;
        }
    }
    // 1 MiB segments are four fill writes of 256 KiB: 100 ms each here, while the records
    // below fill a segment in far less.
    let opts = WalOptions::new()
        .segment_bytes(1 << 20)
        .record_max(4 << 10)
        .direct_io(direct);
    let records = 3_000u64;
    common::block_on(async {
        let disk = FailingDisk::passthrough(inner);
        disk.slow_writes("prepared-", Duration::from_millis(100));
        let (log, _) = Wal::open(disk, &dir, opts.clone()).await.unwrap();
        let batch: Vec<Vec<u8>> = (1..=records).map(payload).collect();
        for chunk in batch.chunks(100) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            log.append_batch(&refs).await.unwrap();
        }
        let stats = log.stats();
        assert!(stats.rotations >= 2, "the records span segments: {stats:?}");
        assert!(
            stats.fills_cut >= 1,
            "rotation cut a slow fill short rather than wait for it: {stats:?}"
        );
        let last = common::check_contiguous(&log, 1, payload, backend).await;
        assert_eq!(last, records, "{backend}: every record reads back");
        log.close().await.unwrap();

        let disk = common::backend(backend).unwrap();
        let (log, report) = Wal::open(disk, &dir, opts).await.unwrap();
        assert_eq!(report.next_lsn, records + 1, "{backend}: {report:?}");
        let last = common::check_contiguous(&log, 1, payload, backend).await;
        assert_eq!(
            last, records,
            "{backend}: every record reads back after reopening"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn rotation_cuts_a_slow_fill_short_blocking() {
    rotation_cuts_a_slow_fill_short("blocking");
}

#[test]
fn rotation_cuts_a_slow_fill_short_raw_direct() {
    rotation_cuts_a_slow_fill_short("raw+direct");
}
