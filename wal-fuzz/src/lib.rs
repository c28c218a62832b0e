//! The fuzzing harness of the `wal` crate: what the cargo-fuzz targets in `fuzz/` run, and what
//! `cargo test` replays over their committed corpus (`fuzz/corpus/<target>/`).
//!
//! Long runs (nightly, `cargo install cargo-fuzz`):
//!
//! ```sh
//! cd fuzz && cargo +nightly fuzz run decode -- -max_total_time=600
//! cd fuzz && cargo +nightly fuzz run recover -- -max_total_time=600
//! ```

#![forbid(unsafe_code)]

use std::path::Path;

use conformance::CrashDisk;
use diskio::{AlignedBuf, DiskIo, OpenOptions};
use wal::format::{Frame, HEADER_LEN, SegmentHeader, decode_frame, segment_name};
use wal::{Wal, WalOptions};

/// Decodes `data` as a segment header and as frames with LSNs, salts and limits taken from it.
/// Must never panic, and never allocate beyond the input.
pub fn decode(data: &[u8]) {
    let _ = SegmentHeader::decode(data);
    if data.len() < 17 {
        return;
    }
    let lsn = u64::from_le_bytes(data[0..8].try_into().unwrap_or([0; 8]));
    let salt = u64::from_le_bytes(data[8..16].try_into().unwrap_or([0; 8]));
    let record_max = usize::from(data[16]) << 8;
    let mut at = 17;
    let mut lsn = lsn;
    while at < data.len() {
        match decode_frame(&data[at..], lsn, salt, record_max) {
            Frame::Record { frame_len, .. } => {
                at += frame_len;
                lsn = lsn.wrapping_add(1);
            }
            Frame::End | Frame::Invalid(_) => at += 8,
        }
    }
}

/// Recovers a log directory made from `data` (up to four files, see [`files_of`]) on an
/// in-memory disk (`CrashDisk`), then reads everything back and appends once. Must never panic, hang or allocate beyond the
/// files' sizes, whatever the files hold.
pub fn recover(data: &[u8]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        let disk = CrashDisk::new();
        for (name, contents) in files_of(data) {
            if put(&disk, &Path::new("log").join(name), &contents)
                .await
                .is_err()
            {
                return;
            }
        }
        let opts = WalOptions::new()
            .segment_bytes(64 << 10)
            .record_max(4 << 10);
        if let Ok((log, _)) = Wal::open(disk, "log", opts).await {
            let mut reader = log.reader(1);
            let mut n = 0;
            while let Ok(Some(_)) = reader.next().await {
                n += 1;
                if n > 1 << 16 {
                    break;
                }
            }
            let _ = log.append(b"after recovery").await;
        }
    });
}

/// Splits fuzz input into files: each file is a one-byte kind (segment name from the next 2
/// bytes, or a temporary file), a 2-byte length, then that many bytes (fewer at the end); a
/// segment's first bytes get a valid header for its name when the kind byte asks for one, so
/// the fuzzer reaches the records.
pub fn files_of(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    while data.len() >= 5 && files.len() < 4 {
        let kind = data[0];
        let first = u64::from(u16::from_le_bytes([data[1], data[2]])).max(1);
        let len = usize::from(u16::from_le_bytes([data[3], data[4]]));
        data = &data[5..];
        let take = len.min(data.len());
        let mut contents = data[..take].to_vec();
        data = &data[take..];
        let name = if kind % 8 == 7 {
            "prepared-1.wal.tmp".to_owned()
        } else {
            segment_name(first)
        };
        if kind & 0x10 != 0 {
            let mut header = [0u8; HEADER_LEN];
            SegmentHeader {
                first_lsn: first,
                salt: u64::from(kind),
            }
            .encode(&mut header);
            let mut with = header.to_vec();
            with.extend_from_slice(&contents);
            contents = with;
        }
        files.push((name, contents));
    }
    files
}

async fn put(disk: &CrashDisk, path: &Path, contents: &[u8]) -> diskio::Result<()> {
    let f = disk.open(path, &OpenOptions::read_write_create()).await?;
    if !contents.is_empty() {
        let (res, _) = disk
            .write_all_at(f, AlignedBuf::from_slice(contents, 512)?, 0)
            .await;
        res?;
    }
    disk.close(f).await
}
