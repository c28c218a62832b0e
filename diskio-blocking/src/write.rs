//! `pwrite`, `pwritev` and `pwritev2` on a worker thread (or a lone durable write's caller).

use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;

use diskio::backend::IOV_MAX;
use diskio::{AlignedBuf, BufResult, Context};

use crate::files::OpenFile;

pub(crate) fn write_at(
    file: &OpenFile,
    buf: AlignedBuf,
    offset: u64,
    ctx: Context,
) -> BufResult<usize> {
    loop {
        match file.file.write_at(&buf, offset) {
            Ok(n) => return (Ok(n), buf),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (Err(file.err(ctx, e)), buf),
        }
    }
}

/// Writes the buffers back to back, `IOV_MAX` at a time. Stops at the first short chunk. An error
/// after some bytes were written is reported as that short count (as `pwritev` itself does).
pub(crate) fn writev_at(
    file: &OpenFile,
    bufs: Vec<AlignedBuf>,
    offset: u64,
    ctx: Context,
) -> BufResult<usize, Vec<AlignedBuf>> {
    let mut written = 0usize;
    for chunk in bufs.chunks(IOV_MAX) {
        let slices: Vec<IoSlice<'_>> = chunk.iter().map(|b| IoSlice::new(b)).collect();
        let want: usize = chunk.iter().map(|b| b.len()).sum();
        let at = offset + written as u64;
        let n = loop {
            match nix::sys::uio::pwritev(&file.file, &slices, at as libc::off_t) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) if written == 0 => {
                    let err = file.errno(ctx, errno as i32);
                    drop(slices);
                    return (Err(err), bufs);
                }
                Err(_) => break 0, // reported as a short write; the next attempt sees the error
            }
        };
        written += n;
        if n < want {
            break;
        }
    }
    (Ok(written), bufs)
}

/// Writes every byte of the buffers (finishing short writes), then syncs with `kind`: the
/// trait's write-then-sync as one job on one worker thread (one hand-off instead of two).
pub(crate) fn writev_all_then_sync(
    file: &OpenFile,
    bufs: Vec<AlignedBuf>,
    offset: u64,
    kind: diskio::SyncKind,
    ctx: Context,
) -> BufResult<usize, Vec<AlignedBuf>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let (res, bufs) = writev_at(file, bufs, offset, ctx.clone());
    let mut done = match res {
        Ok(n) => n,
        Err(e) => return (Err(e), bufs),
    };
    // Short: finish buffer by buffer from where the kernel stopped.
    let mut start = 0usize;
    for buf in &bufs {
        let end = start + buf.len();
        while done < end {
            match file
                .file
                .write_at(&buf[done - start..], offset + done as u64)
            {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "the file took no more bytes");
                    return (Err(file.err(ctx, e)), bufs);
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(file.err(ctx, e)), bufs),
            }
        }
        start = end;
    }
    match crate::sync::fsync(file, kind, ctx) {
        Ok(()) => (Ok(total), bufs),
        Err(e) => (Err(e), bufs),
    }
}

/// `write_sync_at` on a worker thread (or a lone durable write's caller). With `dsync`, one
/// `pwritev2` with `RWF_DSYNC` (`RWF_SYNC` for [`SyncKind::All`](diskio::SyncKind::All)) that
/// the kernel makes durable before it returns ([`diskio::backend::write_all_durable`]); without,
/// [`writev_all_then_sync`].
pub(crate) fn write_sync(
    file: &OpenFile,
    (bufs, offset): (Vec<AlignedBuf>, u64),
    kind: diskio::SyncKind,
    dsync: bool,
    ctx: Context,
) -> BufResult<usize, Vec<AlignedBuf>> {
    if !dsync {
        return writev_all_then_sync(file, bufs, offset, kind, ctx);
    }
    match diskio::backend::write_all_durable(&file.file, &bufs, offset, kind) {
        Ok(()) => {
            let total = bufs.iter().map(|b| b.len()).sum();
            (Ok(total), bufs)
        }
        Err(e) => (Err(file.err(ctx, e)), bufs),
    }
}
