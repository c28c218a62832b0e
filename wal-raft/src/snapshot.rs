//! A state machine's latest snapshot kept in a file: `dir/snapshot` holds the snapshot's meta
//! and data, postcard-encoded, then a CRC32C of those bytes. It is replaced atomically (a
//! temporary file written and synced, renamed over it, the directory synced), so a crash
//! leaves the old snapshot or the new one, never a mix.

use std::io::{self, Write};
use std::path::Path;

use openraft::{Node, NodeId, SnapshotMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const FILE: &str = "snapshot";

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct SnapshotFile<NID: NodeId, N: Node> {
    meta: SnapshotMeta<NID, N>,
    data: Vec<u8>,
}

/// A kept snapshot: its meta and its data.
pub type Kept<NID, N> = (SnapshotMeta<NID, N>, Vec<u8>);

/// The snapshot kept in `dir`, if any (a temporary file a crash left behind is removed).
///
/// # Errors
///
/// The file system's; `InvalidData` for a file that does not verify or decode.
pub fn load<NID, N>(dir: &Path) -> io::Result<Option<Kept<NID, N>>>
where
    NID: NodeId + DeserializeOwned,
    N: Node + DeserializeOwned,
{
    let _ = std::fs::remove_file(dir.join(format!("{FILE}.tmp")));
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |why: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(bad(&"too short"));
    };
    let (body, crc) = bytes.split_at(body_len);
    if crc != crc32c::crc32c(body).to_le_bytes() {
        return Err(bad(&"checksum mismatch"));
    }
    let file: SnapshotFile<NID, N> = postcard::from_bytes(body).map_err(|e| bad(&e))?;
    Ok(Some((file.meta, file.data)))
}

/// Replaces the snapshot kept in `dir` with `meta` and `data`, atomically; returns once the
/// new one is durable.
///
/// # Errors
///
/// The codec's or the file system's.
pub async fn save<NID, N>(dir: &Path, meta: &SnapshotMeta<NID, N>, data: &[u8]) -> io::Result<()>
where
    NID: NodeId + Serialize,
    N: Node + Serialize,
{
    let file = SnapshotFile {
        meta: meta.clone(),
        data: data.to_vec(),
    };
    let mut bytes = postcard::to_allocvec(&file).map_err(io::Error::other)?;
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        let temp = dir.join(format!("{FILE}.tmp"));
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&temp, dir.join(FILE))?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(io::Error::other)?
}
