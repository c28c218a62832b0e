//! `pread` on a worker thread.

use std::io;
use std::os::unix::fs::FileExt;

use diskio::{AlignedBuf, BufResult, Context};

use crate::files::OpenFile;

/// Reads up to `buf.len()` bytes at `offset`; truncates `buf` to what was read.
pub(crate) fn read_at(
    file: &OpenFile,
    mut buf: AlignedBuf,
    offset: u64,
    ctx: Context,
) -> BufResult<usize> {
    loop {
        match file.file.read_at(&mut buf, offset) {
            Ok(n) => {
                buf.truncate(n);
                return (Ok(n), buf);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (Err(file.err(ctx, e)), buf),
        }
    }
}
