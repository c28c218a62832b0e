//! Scratch files: created once with real (non-zero) data, so reads hit the device rather than
//! unwritten extents, and reused across runs when the size matches.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Makes sure `dir/name` exists with exactly `bytes` bytes of written data; returns its path.
///
/// # Errors
///
/// Any I/O error while creating or filling the file.
pub fn ensure_file(dir: &Path, name: &str, bytes: u64) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.len() == bytes && file_is_filled(&path)? {
            return Ok(path);
        }
    }
    let mut file = File::create(&path)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut state = 0x1234_5678_9ABC_DEF0u64;
    let mut written = 0u64;
    while written < bytes {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = (bytes - written).min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        written += n as u64;
    }
    file.sync_all()?;
    Ok(path)
}

/// A cheap check that the last block holds data (a file cut short by an interrupted run is
/// refilled).
fn file_is_filled(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < 4096 {
        return Ok(len == 0);
    }
    let mut tail = [0u8; 4096];
    file.read_exact_at(&mut tail, len - 4096)?;
    Ok(tail.iter().any(|&b| b != 0))
}

/// Reads the whole file once, so the page cache holds it.
///
/// # Errors
///
/// Any I/O error while reading.
pub fn warm(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(());
        }
        at += n as u64;
    }
}
