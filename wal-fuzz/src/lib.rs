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
use wal::format::{
    Frame, HEADER_LEN, Salt, SegmentHeader, decode_frame, encode_frame, seal_frames, segment_name,
};
use wal::{Wal, WalOptions};

/// Decodes `data` as a segment header and as frames with LSNs, salts and limits taken from it.
/// Must never panic, and never allocate beyond the input.
pub fn decode(data: &[u8]) {
    let _ = SegmentHeader::decode(data);
    if data.len() < 17 {
        return;
    }
    let lsn = u64::from_le_bytes(data[0..8].try_into().unwrap_or([0; 8]));
    let salt = Salt::new(u64::from_le_bytes(data[8..16].try_into().unwrap_or([0; 8])));
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
    let _ = recovered(data);
}

/// What [`recover`] does; the records read back after recovery, or `None` if the log did not
/// open (or the files could not be made).
pub fn recovered(data: &[u8]) -> Option<u64> {
    let rt = tokio::runtime::Builder::new_current_thread().build().ok()?;
    rt.block_on(async {
        let disk = CrashDisk::new();
        for (name, contents) in files_of(data) {
            put(&disk, &Path::new("log").join(name), &contents)
                .await
                .ok()?;
        }
        let opts = WalOptions::new()
            .segment_bytes(64 << 10)
            .record_max(4 << 10);
        let (log, _) = Wal::open(disk, "log", opts).await.ok()?;
        let mut reader = log.reader(1);
        let mut n = 0;
        while let Ok(Some(_)) = reader.next().await {
            n += 1;
            if n > 1 << 16 {
                break;
            }
        }
        let _ = log.append(b"after recovery").await;
        Some(n)
    })
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
                salt: Salt::new(u64::from(kind)),
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

/// Frames of `n` records from `first` on, sealed as one group for a segment with `salt`.
fn frames(first: u64, n: u64, salt: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for lsn in first..first + n {
        let payload: Vec<u8> = (0..(lsn * 37 % 300) as usize)
            .map(|i| (i as u64 ^ lsn) as u8)
            .collect();
        encode_frame(&mut out, lsn, &payload);
    }
    seal_frames(&mut out, first, Salt::new(salt));
    out
}

/// Inputs that reach the valid-record paths, which random bytes almost never do (a CRC guards
/// every frame): written into `fuzz/corpus/` by `cargo run -p wal-fuzz --example seed_corpus`
/// whenever the format changes, beside what the fuzzer finds from them.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    // decode: LSN 1, salt 9, record_max 4 KiB, then frames; whole, torn, and bit-flipped.
    let mut head = Vec::new();
    head.extend_from_slice(&1u64.to_le_bytes());
    head.extend_from_slice(&9u64.to_le_bytes());
    head.push(16);
    let body = frames(1, 6, 9);
    let mut whole = head.clone();
    whole.extend_from_slice(&body);
    let mut torn = head.clone();
    torn.extend_from_slice(&body[..body.len() - 13]);
    let mut flipped = whole.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    out.push(("decode", "seed-v2-whole".to_owned(), whole));
    out.push(("decode", "seed-v2-torn".to_owned(), torn));
    out.push(("decode", "seed-v2-flipped".to_owned(), flipped));
    // recover: segments with valid headers (kind 0x10: salt 16) and valid records.
    let file = |kind: u8, first: u16, contents: &[u8]| {
        let mut f = vec![kind];
        f.extend_from_slice(&first.to_le_bytes());
        f.extend_from_slice(&(contents.len() as u16).to_le_bytes());
        f.extend_from_slice(contents);
        f
    };
    let one = frames(1, 8, 16);
    out.push((
        "recover",
        "seed-v2-one-segment".to_owned(),
        file(0x10, 1, &one),
    ));
    out.push((
        "recover",
        "seed-v2-torn-tail".to_owned(),
        file(0x10, 1, &one[..one.len() - 20]),
    ));
    let mut two = file(0x10, 1, &one);
    two.extend(file(0x10, 9, &frames(9, 5, 16)));
    out.push(("recover", "seed-v2-two-segments".to_owned(), two));
    // Damage in a group that a later group follows: corruption, not a torn tail.
    let mut damaged = frames(1, 4, 16);
    damaged.extend(frames(5, 4, 16));
    damaged[40] ^= 1;
    out.push((
        "recover",
        "seed-v2-damaged".to_owned(),
        file(0x10, 1, &damaged),
    ));
    let mut leftover = file(0x10, 1, &one);
    leftover.extend(file(0x17, 9, &frames(9, 3, 23)));
    out.push(("recover", "seed-v2-leftover-temp".to_owned(), leftover));
    out
}
