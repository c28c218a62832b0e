//! Open files: the descriptor and what admission checks.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use diskio::backend::{FileAccess, direct_alignment};
use diskio::{Context, DirectAlignment, Error, OpenOptions, Result};

/// An open file. Operations hold an `Arc` to it, so closing the file while operations are in
/// flight keeps the descriptor open until the last of them finishes.
pub(crate) struct OpenFile {
    pub(crate) file: File,
    pub(crate) access: FileAccess,
}

impl AsRef<FileAccess> for OpenFile {
    fn as_ref(&self) -> &FileAccess {
        &self.access
    }
}

impl OpenFile {
    /// The context `ctx` with this file's path, for an error from the OS.
    pub(crate) fn err(&self, ctx: Context, e: std::io::Error) -> Error {
        Error::io(ctx.path(self.access.path.clone()), e)
    }

    /// As [`err`](Self::err), from an errno.
    pub(crate) fn errno(&self, ctx: Context, errno: i32) -> Error {
        Error::from_errno(ctx.path(self.access.path.clone()), errno)
    }
}

/// Opens `path` on a worker thread; refuses directories.
pub(crate) fn open_file(path: &Arc<Path>, options: &OpenOptions, ctx: Context) -> Result<OpenFile> {
    let fail = |e| Error::io(ctx.clone(), e);
    let file = options.to_std().open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if meta.is_dir() {
        return Err(Error::from_errno(ctx, libc::EISDIR));
    }
    let direct = if options.is_direct() {
        direct_alignment(&file)
    } else {
        DirectAlignment::NONE
    };
    Ok(OpenFile {
        file,
        access: FileAccess::new(Arc::clone(path), options, direct),
    })
}
