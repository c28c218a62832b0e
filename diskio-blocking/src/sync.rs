//! `fdatasync`/`fsync`, `fallocate` and `ftruncate` on a worker thread.

use diskio::{Context, Result, SyncKind};
use nix::fcntl::{FallocateFlags, fallocate};

use crate::files::OpenFile;

pub(crate) fn fsync(file: &OpenFile, kind: SyncKind, ctx: Context) -> Result<()> {
    diskio::backend::sync_file(&file.file, kind).map_err(|e| file.err(ctx, e))
}

pub(crate) fn preallocate(file: &OpenFile, offset: u64, len: u64, ctx: Context) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    loop {
        match fallocate(
            &file.file,
            FallocateFlags::empty(),
            offset as i64,
            len as i64,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => {
                return Err(file.errno(ctx, errno as i32));
            }
        }
    }
}

pub(crate) fn set_len(file: &OpenFile, len: u64, ctx: Context) -> Result<()> {
    file.file.set_len(len).map_err(|e| file.err(ctx, e))
}
