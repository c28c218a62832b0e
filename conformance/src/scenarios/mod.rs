//! The scenarios: one `async fn` each, generic over the backend.
//!
//! Each takes the [`Cx`] (backend + scratch directory), panics on a failed check (with a message
//! saying what was expected), and returns [`Outcome::Skipped`](crate::harness::Outcome::Skipped) with a reason when the machine
//! cannot run it. [`suite!`](crate::suite) turns every one of them into a `#[test]`.

mod basic;
mod concurrency;
mod direct;
mod errors;
mod metadata;
mod powercut;
mod stress;
mod writev;

pub use basic::{read_at_and_past_eof, round_trip_sizes, short_read_at_tail, stats_are_counted};
pub use concurrency::{
    concurrent_ops_one_file, drop_in_flight_then_read_back, dropped_ops_are_counted,
};
pub use direct::{
    direct_misaligned_buffer, direct_misaligned_length, direct_misaligned_offset, direct_round_trip,
};
pub use errors::{
    buffers_returned_on_errors, open_directory, open_missing_path, open_without_permission,
    unknown_and_closed_file_id,
};
pub use metadata::{directory_entries, preallocate_then_len, set_len_down_and_up, sync_kinds};
pub use powercut::{
    power_cut_after_write_sync_at, power_cut_created_directories, power_cut_direct_writes,
    power_cut_keeps_synced_data, power_cut_may_drop_unsynced_data, power_cut_rename_then_sync_dir,
    power_cut_sync_error_reaches_caller,
};
pub use stress::{
    linked_write_fails, many_more_in_flight_than_ring, shutdown_with_ops_in_flight,
    ten_thousand_ops_half_dropped,
};
pub use writev::{writev_more_than_iov_max, writev_order_and_offsets};

use diskio::{AlignedBuf, DiskIo, FileId, OpenOptions};

use crate::harness::Cx;

/// `len` bytes that depend on `seed` and on their position, so a misplaced or stale byte shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = crate::Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A backend buffer holding `data`.
pub(crate) fn buf_of<D: DiskIo>(disk: &D, data: &[u8]) -> AlignedBuf {
    let mut buf = disk.alloc(data.len()).expect("alloc");
    buf.copy_from_slice(data);
    buf
}

/// Creates (truncating) a read-write file in the scratch directory.
pub(crate) async fn create<D: DiskIo>(cx: &Cx<D>, name: &str) -> FileId {
    let path = cx.path(name);
    cx.disk
        .open(&path, &OpenOptions::read_write_create().truncate(true))
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
}

/// Writes all of `data` at `offset`.
pub(crate) async fn write_all<D: DiskIo>(disk: &D, file: FileId, offset: u64, data: &[u8]) {
    let (res, _) = disk.write_all_at(file, buf_of(disk, data), offset).await;
    res.unwrap_or_else(|e| panic!("write_all_at({offset}, {} bytes): {e}", data.len()));
}

/// Reads `len` bytes at `offset`, looping over short reads, stopping at end of file.
pub(crate) async fn read_up_to<D: DiskIo>(
    disk: &D,
    file: FileId,
    offset: u64,
    len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let want = len - out.len();
        let buf = disk.alloc(want).expect("alloc");
        let (res, buf) = disk.read_at(file, buf, offset + out.len() as u64).await;
        let n = res.unwrap_or_else(|e| panic!("read_at({offset}, {len}): {e}"));
        assert!(
            n <= want,
            "read_at returned {n} bytes for a {want}-byte buffer"
        );
        assert_eq!(
            buf.len(),
            n,
            "read_at must truncate the buffer to the bytes read"
        );
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf);
    }
    out
}

/// Asserts equality of two byte strings, naming the first difference instead of dumping both.
#[track_caller]
pub(crate) fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    match first {
        Some(i) => panic!(
            "{what}: byte {i} is {:#04x}, expected {:#04x} (got {} bytes, expected {})",
            got[i],
            want[i],
            got.len(),
            want.len()
        ),
        None => panic!("{what}: got {} bytes, expected {}", got.len(), want.len()),
    }
}
