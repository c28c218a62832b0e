//! The store's small durable state beside the log: the vote and the last purged log id.
//!
//! It lives in one file, `raft-meta`, replaced atomically on every change: the new content is
//! written to `raft-meta.tmp`, synced, renamed over the old file, and the directory is synced
//! before the call returns. A crash leaves the old file or the new one, never a mix; a
//! leftover temporary file is removed at open.
//!
//! ```text
//!  0        8        12       16                 16 + len   20 + len
//!  +--------+--------+--------+------------------+----------+
//!  | magic  |version |  len   | postcard payload |  CRC32C  |
//!  |8 bytes | u32 LE | u32 LE |    len bytes     | u32 LE   |
//!  +--------+--------+--------+------------------+----------+
//!  magic = "diskiorm", version = 1, CRC32C over everything before it
//! ```

use std::path::{Path, PathBuf};

use diskio::{AlignedBuf, DiskIo, OpenOptions, SyncKind};
use openraft::{LogId, NodeId, Vote};
use serde::{Deserialize, Serialize};

use crate::error::Error;

const MAGIC: [u8; 8] = *b"diskiorm";
const VERSION: u32 = 1;
const FILE: &str = "raft-meta";
const TEMP: &str = "raft-meta.tmp";

/// What the store keeps beside the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Meta<NID: NodeId> {
    pub(crate) vote: Option<Vote<NID>>,
    pub(crate) last_purged: Option<LogId<NID>>,
}

impl<NID: NodeId> Default for Meta<NID> {
    fn default() -> Self {
        Self {
            vote: None,
            last_purged: None,
        }
    }
}

/// Reads the state in `dir` (the default if there is none yet), removing a leftover temporary
/// file.
pub(crate) async fn load<D: DiskIo, NID: NodeId>(disk: &D, dir: &Path) -> Result<Meta<NID>, Error> {
    let names = disk.list_dir(dir).await?;
    if names.iter().any(|n| n == TEMP) {
        disk.remove_file(&dir.join(TEMP)).await?;
    }
    if !names.iter().any(|n| n == FILE) {
        return Ok(Meta::default());
    }
    let path = dir.join(FILE);
    let file = disk.open(&path, &OpenOptions::new().read(true)).await?;
    let read = async {
        let len = disk.file_len(file).await?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= 1 << 20)
            .ok_or_else(|| Error::BadMeta {
                path: path.clone(),
                reason: format!("{len} bytes, more than a state file ever holds"),
            })?;
        let mut buf = disk.alloc(len)?;
        buf.resize(len)?;
        let (res, buf) = disk.read_exact_at(file, buf, 0).await;
        res?;
        decode(&buf).map_err(|reason| Error::BadMeta {
            path: path.clone(),
            reason,
        })
    }
    .await;
    disk.close(file).await?;
    read
}

/// Replaces the state in `dir` with `meta`, durably.
pub(crate) async fn store<D: DiskIo, NID: NodeId>(
    disk: &D,
    dir: &Path,
    meta: &Meta<NID>,
) -> Result<(), Error> {
    let bytes = encode(meta)?;
    let temp: PathBuf = dir.join(TEMP);
    let file = disk
        .open(
            &temp,
            &OpenOptions::new().write(true).create(true).truncate(true),
        )
        .await?;
    let written = async {
        let buf = AlignedBuf::from_slice(&bytes, disk.alignment())?;
        let (res, _) = disk.write_all_at(file, buf, 0).await;
        res?;
        disk.fsync(file, SyncKind::All).await
    }
    .await;
    disk.close(file).await?;
    written?;
    disk.rename(&temp, &dir.join(FILE)).await?;
    disk.sync_dir(dir).await?;
    Ok(())
}

fn encode<NID: NodeId>(meta: &Meta<NID>) -> Result<Vec<u8>, Error> {
    let payload = postcard::to_allocvec(meta).map_err(|e| Error::Codec {
        what: "the raft state".to_owned(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(20 + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn decode<NID: NodeId>(bytes: &[u8]) -> Result<Meta<NID>, String> {
    if bytes.len() < 20 || bytes[..8] != MAGIC {
        return Err("not a raft state file (bad magic or too short)".to_owned());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(format!(
            "format version {version}; this build reads {VERSION}"
        ));
    }
    let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    if bytes.len() != 20 + len {
        return Err(format!("{} bytes for a payload of {len}", bytes.len()));
    }
    let body = &bytes[..16 + len];
    let stored = &bytes[16 + len..];
    if stored != crc32c::crc32c(body).to_le_bytes() {
        return Err("checksum mismatch".to_owned());
    }
    postcard::from_bytes(&bytes[16..16 + len]).map_err(|e| format!("payload: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use openraft::CommittedLeaderId;

    use super::*;

    #[test]
    fn round_trip_and_every_flipped_byte_is_refused() {
        let meta = Meta::<u64> {
            vote: Some(Vote::new(7, 3)),
            last_purged: Some(LogId::new(CommittedLeaderId::new(6, 2), 41)),
        };
        let bytes = encode(&meta).unwrap();
        assert_eq!(decode::<u64>(&bytes).unwrap(), meta);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                decode::<u64>(&bad).is_err(),
                "byte {i} flipped was accepted"
            );
        }
        assert!(decode::<u64>(&bytes[..bytes.len() - 1]).is_err());
    }
}
