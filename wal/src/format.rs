//! The on-disk format: segment names, the segment header and the record frame.
//!
//! # Segment file
//!
//! A segment is named by its first LSN, zero-padded so names sort in LSN order:
//! `00000000000000000001.wal`. It starts with a header of [`HEADER_LEN`] bytes (one 4 KiB block, so
//! records start on a block boundary), followed by record frames back to back, followed by zeros.
//!
//! ```text
//! segment header (HEADER_LEN = 4096 bytes; only the first 36 are used)
//!  0        8        12       16                24                32       36         4096
//!  +--------+--------+--------+-----------------+-----------------+--------+-- zeros --+
//!  | magic  |version | hdr len|   first LSN     |      salt       | CRC32C |           |
//!  |8 bytes | u32 LE | u32 LE |     u64 LE      |     u64 LE      | u32 LE |           |
//!  +--------+--------+--------+-----------------+-----------------+--------+-----------+
//!  magic = "diskiowl", version = 2, CRC32C over bytes 0..32
//! ```
//!
//! The salt is drawn at random for every segment. It enters the CRC of every record of the
//! segment without being stored in the record, so a record left over from another segment (a
//! reused file, a stale block) never verifies, even if its bytes are intact.
//!
//! # Record frame
//!
//! ```text
//!  0        4        8                 16                24                  24 + len  multiple of 8
//!  +--------+--------+-----------------+-----------------+-------------------+-- zeros --+
//!  | CRC32C |  len   |      LSN        |   group LSN     | payload (len B)   |  padding  |
//!  | u32 LE | u32 LE |     u64 LE      |     u64 LE      |                   |           |
//!  +--------+--------+-----------------+-----------------+-------------------+-----------+
//!  CRC32C = crc32c(salt as u64 LE ++ bytes 4..24 + len)
//! ```
//!
//! One CRC32C call per frame, over contiguous bytes, started from the CRC of the segment's salt
//! (computed once per segment): that is format version 2. Version 1 took four calls per frame
//! (the fields and the payload in another order); a version-1 segment is refused with
//! [`HeaderFault::Version`].
//!
//! Frames are padded to 8 bytes. LSNs start at 1 and grow by one per record with no gaps, so a
//! frame of zeros (LSN 0) is never valid: it marks the end of the written part. A frame is valid
//! only if its CRC matches **and** its LSN is the one expected at that place, so a record written
//! at the wrong offset or a stale record from an older segment is never returned.
//!
//! The group LSN is the first LSN of the group commit the record went down in. It is what lets
//! recovery tell a torn tail from damage: a group is written only after the one before it was
//! synced, so valid records of a *later* group after a damaged record prove that the damaged
//! one had been synced (and acknowledged) — corruption — while valid records of the *same* group
//! after it are the remains of a write that never completed — a torn tail. The group LSN is
//! known only when the group is formed, so the committer computes each frame's CRC as it seals
//! the group; appenders only copy their records in.

use crate::Lsn;
use crate::error::{Damage, HeaderFault};

/// Bytes of the segment header: one 4 KiB block.
pub const HEADER_LEN: usize = 4096;

/// Bytes of a record frame's header (before the payload).
pub const FRAME_HEADER_LEN: usize = 24;

/// The segment magic.
pub const MAGIC: [u8; 8] = *b"diskiowl";

/// The format version this crate writes and reads.
pub const VERSION: u32 = 2;

/// Bytes of the header that carry fields (the rest is zeros).
const HEADER_FIELDS: usize = 36;

/// The block `direct_io` writes in: the page size, and the physical sector of common devices.
/// Groups are written as whole blocks of this size; `segment_bytes` must be a multiple of it.
pub const DIRECT_BLOCK: u64 = 4096;

/// Suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".wal";

/// Suffix of a segment being prepared (not yet part of the log).
pub const TEMP_SUFFIX: &str = ".wal.tmp";

/// Suffix of the first segment of a log that [`skip_to`](crate::Wal::skip_to) restarts at a
/// later LSN. Once a file with this suffix is in the directory, the skip has happened: recovery
/// finishes it (removes every older segment, renames this one).
pub const SKIP_SUFFIX: &str = ".wal.skip";

/// The file name of the segment whose first LSN is `first`.
pub fn segment_name(first: Lsn) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

/// Suffix of the marker of a truncation under way ([`truncate_from`](crate::Wal::truncate_from)):
/// an empty file named by the first LSN dropped. While it is in the directory, recovery drops
/// every record from that LSN on, whatever state the interrupted truncation left them in.
pub const CUT_SUFFIX: &str = ".wal.cut";

/// The file name of the marker of a truncation that drops every record from `first` on.
pub fn cut_name(first: Lsn) -> String {
    format!("{first:020}{CUT_SUFFIX}")
}

/// The LSN a truncation marker's name names, or `None` if the name is not a marker's.
pub fn parse_cut_name(name: &str) -> Option<Lsn> {
    parse_lsn_name(name, CUT_SUFFIX)
}

/// The file name of the segment that a skip to `first` starts the log with, until the skip is
/// finished.
pub fn skip_name(first: Lsn) -> String {
    format!("{first:020}{SKIP_SUFFIX}")
}

/// The first LSN of a segment file name, or `None` if the name is not a segment's.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    parse_lsn_name(name, SEGMENT_SUFFIX)
}

/// The LSN a skip file's name names, or `None` if the name is not a skip file's.
pub fn parse_skip_name(name: &str) -> Option<Lsn> {
    parse_lsn_name(name, SKIP_SUFFIX)
}

fn parse_lsn_name(name: &str, suffix: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&lsn| lsn > 0)
}

/// A segment's salt, with the CRC32C of its bytes: every frame's CRC starts from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Salt {
    value: u64,
    seed: u32,
}

impl Salt {
    /// The salt `value`.
    pub fn new(value: u64) -> Self {
        Self {
            value,
            seed: crc32c::crc32c(&value.to_le_bytes()),
        }
    }

    /// Its value, as stored in the segment header.
    pub fn value(self) -> u64 {
        self.value
    }
}

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// The value mixed into every record's CRC.
    pub salt: Salt,
}

impl SegmentHeader {
    /// Encodes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out.fill(0);
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        out[24..32].copy_from_slice(&self.salt.value.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..32]);
        out[32..HEADER_FIELDS].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a header from the start of `bytes`.
    ///
    /// # Errors
    ///
    /// [`HeaderFault`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderFault> {
        if bytes.len() < HEADER_LEN {
            return Err(HeaderFault::Short);
        }
        if bytes[0..8] != MAGIC {
            return Err(HeaderFault::Magic);
        }
        let version = le_u32(&bytes[8..12]);
        if version != VERSION {
            return Err(HeaderFault::Version {
                found: version,
                supported: VERSION,
            });
        }
        if le_u32(&bytes[32..36]) != crc32c::crc32c(&bytes[0..32]) {
            return Err(HeaderFault::Checksum);
        }
        let first_lsn = le_u64(&bytes[16..24]);
        if le_u32(&bytes[12..16]) as usize != HEADER_LEN || first_lsn == 0 {
            return Err(HeaderFault::Fields);
        }
        Ok(Self {
            first_lsn,
            salt: Salt::new(le_u64(&bytes[24..32])),
        })
    }
}

/// Bytes a frame of a `len`-byte payload takes: header, payload, padding to 8.
pub fn frame_len(len: usize) -> usize {
    FRAME_HEADER_LEN + len.div_ceil(8) * 8
}

/// The longest run of whole frames at the start of `bytes` that fits in `limit` bytes, found by
/// their length fields alone (nothing is verified): its length and how many frames. It ends
/// at a header of zeros (the end of what was written) or where a frame would pass `limit` or
/// the end of `bytes`.
pub(crate) fn whole_frames(bytes: &[u8], limit: usize) -> (usize, u64) {
    let limit = limit.min(bytes.len());
    let (mut at, mut n) = (0, 0);
    while let Some(header) = bytes.get(at..at + FRAME_HEADER_LEN) {
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let next = at + frame_len(le_u32(&header[4..8]) as usize);
        if next > limit {
            break;
        }
        (at, n) = (next, n + 1);
    }
    (at, n)
}

/// Encodes the frame of `payload` with `lsn` at the end of `out`, without its group LSN and
/// CRC: [`seal_frames`] adds both for the group and the segment the frame goes to.
pub fn encode_frame(out: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    let start = out.len();
    out.resize(start + frame_len(payload.len()), 0);
    let frame = &mut out[start..];
    frame[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame[8..16].copy_from_slice(&lsn.to_le_bytes());
    frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + payload.len()].copy_from_slice(payload);
}

/// Finishes every frame in `bytes` (whole frames back to back, as [`encode_frame`] made them):
/// records the group's first LSN and the CRC, one call per frame from the `salt`'s CRC.
pub fn seal_frames(bytes: &mut [u8], group: Lsn, salt: Salt) {
    let group = group.to_le_bytes();
    let mut at = 0;
    while at + FRAME_HEADER_LEN <= bytes.len() {
        let len = le_u32(&bytes[at + 4..at + 8]) as usize;
        bytes[at + 16..at + 24].copy_from_slice(&group);
        let crc = crc32c::crc32c_append(salt.seed, &bytes[at + 4..at + FRAME_HEADER_LEN + len]);
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        at += frame_len(len);
    }
}

/// What is found at one place of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A valid record: its payload, and the bytes its frame takes.
    Record {
        /// The record's bytes.
        payload: &'a [u8],
        /// Bytes of the whole frame (header, payload, padding).
        frame_len: usize,
        /// The first LSN of the group commit the record went down in.
        group: Lsn,
    },
    /// Zeros where a frame header would be (or too few bytes left for one): the end of what was
    /// written.
    End,
    /// Something that is not the expected record: torn, corrupt, stale or misplaced.
    Invalid(Damage),
}

/// Decodes the frame at the start of `bytes`, expecting LSN `lsn` in a segment with `salt`;
/// payloads longer than `record_max` are refused without being read.
pub fn decode_frame(bytes: &[u8], lsn: Lsn, salt: Salt, record_max: usize) -> Frame<'_> {
    if bytes.len() < FRAME_HEADER_LEN {
        return if bytes.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Invalid(Damage::PartialHeader)
        };
    }
    let header = &bytes[..FRAME_HEADER_LEN];
    if header.iter().all(|&b| b == 0) {
        return Frame::End;
    }
    let len = le_u32(&header[4..8]) as usize;
    let found = le_u64(&header[8..16]);
    if found != lsn {
        return Frame::Invalid(Damage::WrongLsn { found });
    }
    if len > record_max {
        return Frame::Invalid(Damage::TooLong { len });
    }
    let total = frame_len(len);
    if total > bytes.len() {
        return Frame::Invalid(Damage::PastEnd { len });
    }
    let payload = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    let crc = crc32c::crc32c_append(salt.seed, &bytes[4..FRAME_HEADER_LEN + len]);
    let stored = le_u32(&header[0..4]);
    if crc != stored {
        return Frame::Invalid(Damage::ChecksumMismatch {
            stored,
            computed: crc,
        });
    }
    let group = le_u64(&header[16..24]);
    if group == 0 || group > lsn {
        return Frame::Invalid(Damage::BadGroup { group });
    }
    Frame::Record {
        payload,
        frame_len: total,
        group,
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sealed(lsn: Lsn, payload: &[u8], salt: u64) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(&mut v, lsn, payload);
        seal_frames(&mut v, lsn, Salt::new(salt));
        v
    }

    fn d(bytes: &[u8], lsn: Lsn, salt: u64, record_max: usize) -> Frame<'_> {
        decode_frame(bytes, lsn, Salt::new(salt), record_max)
    }

    #[test]
    fn sizes_are_as_drawn() {
        assert_eq!(FRAME_HEADER_LEN, 24);
        assert_eq!(frame_len(0), 24);
        assert_eq!(frame_len(1), 32);
        assert_eq!(frame_len(8), 32);
        assert_eq!(frame_len(9), 40);
        assert_eq!(sealed(1, &[7; 5], 3).len(), 32);
        let f = sealed(0x0102, b"abc", 3);
        assert_eq!(le_u32(&f[4..8]), 3, "length at 4..8");
        assert_eq!(le_u64(&f[8..16]), 0x0102, "LSN at 8..16");
        assert_eq!(le_u64(&f[16..24]), 0x0102, "group LSN at 16..24");
        assert_eq!(&f[24..27], b"abc", "payload at 24");
        let mut h = [0u8; HEADER_LEN];
        SegmentHeader {
            first_lsn: 42,
            salt: Salt::new(9),
        }
        .encode(&mut h);
        assert_eq!(&h[0..8], b"diskiowl");
        assert_eq!(le_u64(&h[16..24]), 42);
        assert!(h[HEADER_FIELDS..].iter().all(|&b| b == 0));
    }

    #[test]
    fn header_round_trip_and_damage() {
        let hdr = SegmentHeader {
            first_lsn: 7,
            salt: Salt::new(0xDEAD_BEEF),
        };
        let mut h = [0u8; HEADER_LEN];
        hdr.encode(&mut h);
        assert_eq!(SegmentHeader::decode(&h).unwrap(), hdr);
        assert_eq!(SegmentHeader::decode(&h[..100]), Err(HeaderFault::Short));
        let mut bad = h;
        bad[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderFault::Checksum));
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderFault::Magic));
        // A version-1 segment (this format's first) is refused by name.
        let mut bad = h;
        bad[8] = 1;
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(HeaderFault::Version {
                found: 1,
                supported: VERSION
            })
        );
    }

    #[test]
    fn frames_verify_only_in_place() {
        let f = sealed(5, b"hello", 77);
        assert_eq!(
            d(&f, 5, 77, 1024),
            Frame::Record {
                payload: b"hello",
                frame_len: 32,
                group: 5
            }
        );
        // Another LSN, another segment's salt, a flipped bit, a small record_max: all refused.
        assert!(matches!(d(&f, 6, 77, 1024), Frame::Invalid(_)));
        assert!(matches!(d(&f, 5, 78, 1024), Frame::Invalid(_)));
        for bit in 0..f.len() * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            if bit / 8 >= FRAME_HEADER_LEN + 5 {
                continue; // padding is not covered, and need not be
            }
            assert!(matches!(d(&g, 5, 77, 1024), Frame::Invalid(_)), "bit {bit}");
        }
        assert!(matches!(d(&f, 5, 77, 4), Frame::Invalid(_)));
        // Zeros are the end; a cut frame is invalid.
        assert_eq!(d(&[0; 40], 5, 77, 1024), Frame::End);
        // The group LSN is covered, and may not come after the record's LSN.
        let mut v = Vec::new();
        encode_frame(&mut v, 9, b"x");
        encode_frame(&mut v, 10, b"y");
        seal_frames(&mut v, 9, Salt::new(77));
        assert!(matches!(
            d(&v[32..], 10, 77, 1024),
            Frame::Record { group: 9, .. }
        ));
        let mut w = v.clone();
        w[32 + 16] ^= 1;
        assert!(matches!(d(&w[32..], 10, 77, 1024), Frame::Invalid(_)));
        let mut late = Vec::new();
        encode_frame(&mut late, 9, b"x");
        seal_frames(&mut late, 10, Salt::new(77));
        assert!(matches!(d(&late, 9, 77, 1024), Frame::Invalid(_)));
        assert_eq!(d(&[0; 3], 5, 77, 1024), Frame::End);
        assert!(matches!(d(&f[..20], 5, 77, 1024), Frame::Invalid(_)));
    }

    #[test]
    fn empty_records_are_records() {
        let f = sealed(1, b"", 1);
        assert_eq!(
            d(&f, 1, 1, 0),
            Frame::Record {
                payload: b"",
                frame_len: 24,
                group: 1
            }
        );
    }

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(segment_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_name(&segment_name(123_456)), Some(123_456));
        assert!(segment_name(9) < segment_name(10));
        for bad in [
            "1.wal",
            "00000000000000000001.wal.tmp",
            "0000000000000000000a.wal",
            "00000000000000000000.wal",
            "x",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
