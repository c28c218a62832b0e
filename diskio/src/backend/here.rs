//! Durable writes made by the calling thread itself, for the backends' paths that run a
//! system call where they are instead of handing it to a worker or a ring.

use std::fs::File;
use std::io::{self, IoSlice};

use crate::{AlignedBuf, SyncKind};

/// Writes every byte of `bufs`, back to back from `offset`, and makes them durable, on the
/// calling thread: `pwritev2` with `RWF_DSYNC` (`RWF_SYNC` for [`SyncKind::All`]), so the kernel
/// makes each write durable before it returns and no separate sync follows. On an `O_DIRECT`
/// file over written blocks of a device with FUA that is one FUA write, with no journal commit
/// and no cache flush; elsewhere the kernel writes and then syncs the written range in the same
/// call. A short write is durable as far as it went, and the rest is written the same way.
/// Where the kernel has no `RWF_DSYNC` (before Linux 4.7, or not Linux) it is `pwrite` and then
/// `fdatasync` (`fsync`).
///
/// What becomes durable is what this call writes, not earlier buffered writes to other ranges
/// of the file.
///
/// # Errors
///
/// The first error of a write or of the sync it carries. The data may then have been written,
/// and made durable, in part.
pub fn write_all_durable(
    file: &File,
    bufs: &[AlignedBuf],
    offset: u64,
    kind: SyncKind,
) -> io::Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut done = 0usize;
    while done < total {
        let slices = slices_from(bufs, done);
        match pwritev2_sync(file, &slices, offset + done as u64, kind) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file took no more bytes",
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if done == 0 && e.kind() == io::ErrorKind::Unsupported => {
                return write_all_then_sync(file, bufs, offset, kind);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `pwrite` of every buffer in order, then the sync.
fn write_all_then_sync(
    file: &File,
    bufs: &[AlignedBuf],
    offset: u64,
    kind: SyncKind,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = offset;
    for b in bufs {
        file.write_all_at(b, at)?;
        at += b.len() as u64;
    }
    sync_file(file, kind)
}

/// `fdatasync` ([`SyncKind::Data`]) or `fsync` ([`SyncKind::All`]) of `file`, on the calling
/// thread.
///
/// # Errors
///
/// The sync's error.
pub fn sync_file(file: &File, kind: SyncKind) -> io::Result<()> {
    match kind {
        SyncKind::Data => file.sync_data(),
        SyncKind::All => file.sync_all(),
    }
}

#[cfg(target_os = "linux")]
fn pwritev2_sync(
    file: &File,
    slices: &[IoSlice<'_>],
    offset: u64,
    kind: SyncKind,
) -> io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags};
    let flags = match kind {
        SyncKind::Data => ReadWriteFlags::DSYNC,
        SyncKind::All => ReadWriteFlags::SYNC,
    };
    match rustix::io::pwritev2(file, slices, offset, flags) {
        Ok(n) => Ok(n),
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => Err(unsupported()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn pwritev2_sync(_: &File, _: &[IoSlice<'_>], _: u64, _: SyncKind) -> io::Result<usize> {
    Err(unsupported())
}

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this kernel has no RWF_DSYNC (pwritev2, Linux 4.7+)",
    )
}

/// The bytes of `bufs` from byte `skip` on, as at most [`IOV_MAX`](super::IOV_MAX) slices.
fn slices_from(bufs: &[AlignedBuf], mut skip: usize) -> Vec<IoSlice<'_>> {
    let max = super::IOV_MAX;
    let mut slices = Vec::with_capacity(bufs.len().min(max));
    for buf in bufs {
        if slices.len() == max {
            break;
        }
        if skip >= buf.len() {
            skip -= buf.len();
            continue;
        }
        slices.push(IoSlice::new(&buf[skip..]));
        skip = 0;
    }
    slices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: &[u8]) -> AlignedBuf {
        AlignedBuf::from_slice(bytes, 512).unwrap()
    }

    #[test]
    fn slices_start_where_the_last_write_stopped() {
        let bufs = [buf(b"abc"), buf(b"defg"), buf(b"h")];
        let flat = |skip| -> Vec<u8> {
            slices_from(&bufs, skip)
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect()
        };
        assert_eq!(flat(0), b"abcdefgh");
        assert_eq!(flat(2), b"cdefgh");
        assert_eq!(flat(3), b"defgh");
        assert_eq!(flat(5), b"fgh");
        assert_eq!(flat(7), b"h");
        assert!(flat(8).is_empty());
    }

    #[test]
    fn a_durable_write_lands_whole() {
        let dir = std::env::temp_dir().join(format!("diskio-here-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let bufs = [buf(b"hello, "), buf(b"durable "), buf(b"world")];
        for kind in [SyncKind::Data, SyncKind::All] {
            write_all_durable(&file, &bufs, 3, kind).unwrap();
            let got = std::fs::read(&path).unwrap();
            assert_eq!(&got[..3], [0, 0, 0]);
            assert_eq!(&got[3..], b"hello, durable world");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
