//! Admission: the step every operation of every backend takes before it reaches the kernel.
//!
//! Resolve the file, check the access, the range and the `O_DIRECT` alignment, start the
//! operation's timer, and on refusal hand the buffers back with the error. Written once here so
//! that every backend (and the fault-injecting disks of the conformance suite) refuses the same
//! requests with the same errors. Everything is generic and `#[inline]`: the checks compile into
//! each backend's operation, with no call through a function pointer on the hot path.

use std::sync::Arc;

use crate::buf::AlignedBuf;
use crate::error::{Context, Error, Op, Result};
use crate::file::FileId;
use crate::stats::{OpTimer, Stats};

use super::table::{FileAccess, FileTable};

/// What an operation addresses: its kind, its file, and the offset and length it names (a
/// length is taken from the buffers when they are given). It becomes the [`Context`] of every
/// error the operation returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub op: Op,
    /// The file it addresses.
    pub file: FileId,
    /// The offset it names, if any.
    pub offset: Option<u64>,
    /// The length it names, if not that of its buffers.
    pub len: Option<u64>,
}

impl Request {
    /// An operation on `file` that names no offset (`fsync`, `file_len`).
    #[inline]
    pub fn new(op: Op, file: FileId) -> Self {
        Self {
            op,
            file,
            offset: None,
            len: None,
        }
    }

    /// An operation on `file` at `offset` (reads, writes, `preallocate`).
    #[inline]
    pub fn at(op: Op, file: FileId, offset: u64) -> Self {
        Self::new(op, file).offset(offset)
    }

    /// Sets the offset.
    #[inline]
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Sets the length (for operations without buffers: `preallocate`, `set_len`).
    #[inline]
    pub fn len(mut self, len: u64) -> Self {
        self.len = Some(len);
        self
    }

    /// The context of this request with its buffers: the length is the buffers' unless the
    /// request names one.
    #[inline]
    pub fn context(&self, bufs: &impl OpBufs) -> Context {
        Context {
            op: self.op,
            file: Some(self.file),
            path: None,
            offset: self.offset,
            len: self.len.or_else(|| bufs.byte_len()),
        }
    }
}

/// The start of `open` as every backend counts it: the path shared, the context for its errors,
/// the running timer (finish it with [`FileTable::insert_opened`]).
pub fn start_open(
    stats: &Stats,
    path: &std::path::Path,
) -> (Arc<std::path::Path>, Context, OpTimer) {
    let path: Arc<std::path::Path> = Arc::from(path);
    let ctx = Context::new(Op::Open).path(Arc::clone(&path));
    (path, ctx, stats.start(Op::Open))
}

/// The memory an operation hands to the kernel, as admission sees it.
pub trait OpBufs {
    /// The total length, or `None` for an operation without buffers.
    fn byte_len(&self) -> Option<u64>;

    /// `(address, length)` of each buffer, in the order they are laid out in the file.
    fn parts(&self) -> impl Iterator<Item = (usize, usize)>;
}

impl OpBufs for AlignedBuf {
    #[inline]
    fn byte_len(&self) -> Option<u64> {
        Some(self.len() as u64)
    }

    #[inline]
    fn parts(&self) -> impl Iterator<Item = (usize, usize)> {
        std::iter::once((self.as_ptr() as usize, self.len()))
    }
}

impl OpBufs for Vec<AlignedBuf> {
    #[inline]
    fn byte_len(&self) -> Option<u64> {
        Some(self.iter().map(|b| b.len() as u64).sum())
    }

    #[inline]
    fn parts(&self) -> impl Iterator<Item = (usize, usize)> {
        self.iter().map(|b| (b.as_ptr() as usize, b.len()))
    }
}

/// No buffers (`fsync`, `preallocate`, `set_len`, `file_len`).
impl OpBufs for () {
    #[inline]
    fn byte_len(&self) -> Option<u64> {
        None
    }

    #[inline]
    fn parts(&self) -> impl Iterator<Item = (usize, usize)> {
        std::iter::empty()
    }
}

/// An operation let in: its file, the context for its errors, and its running timer (finish it
/// when the result is known).
#[derive(Debug)]
pub struct Admitted<F> {
    /// The backend's record of the file.
    pub file: F,
    /// The operation's context (add the path to it on errors from the OS).
    pub ctx: Context,
    /// The operation's clock, counted in the backend's [`Stats`].
    pub timer: OpTimer,
}

/// A refused operation: the error, and the buffers it came with.
pub type Refused<B> = (Error, B);

/// The admitted operation of an admission's result, or else `return (Err(e), bufs)` from the
/// enclosing operation: the refusal with its buffers handed back, as every operation that takes
/// buffers must.
///
/// ```
/// use diskio::backend::{FileAccess, FileTable, Request, Stats};
/// use diskio::{AlignedBuf, BufResult, FileId, Op};
///
/// /// The start of a backend's `read_at`: a refused read returns here, with its buffer.
/// fn read_at(
///     files: &FileTable<FileAccess>,
///     stats: &Stats,
///     file: FileId,
///     buf: AlignedBuf,
///     offset: u64,
/// ) -> BufResult<usize> {
///     let req = Request::at(Op::Read, file, offset);
///     let (op, buf) = diskio::admitted!(files.admit(stats, req, buf));
///     // ... hand `buf` to the kernel; here, nothing is read.
///     op.timer.ok(0);
///     (Ok(0), buf)
/// }
///
/// let (files, stats) = (FileTable::new(), Stats::new());
/// let buf = AlignedBuf::zeroed(512, 512)?;
/// let (res, buf) = read_at(&files, &stats, FileId::from_raw(7), buf, 0);
/// assert!(res.is_err(), "an id never opened is refused");
/// assert_eq!(buf.len(), 512, "and the buffer comes back");
/// # Ok::<(), diskio::Error>(())
/// ```
#[macro_export]
macro_rules! admitted {
    ($admission:expr) => {
        match $admission {
            ::std::result::Result::Ok(admitted) => admitted,
            ::std::result::Result::Err((e, bufs)) => {
                return (::std::result::Result::Err(e), bufs);
            }
        }
    };
}

/// Admits `req` with `bufs`: starts its timer in `stats`, resolves its file with `resolve`, and
/// checks it against the file's [`FileAccess`] (found by `access`). On refusal the timer counts
/// an error and the buffers come back with the error.
///
/// # Errors
///
/// Whatever `resolve` returns (typically [`Error::BadFile`]), and the errors of
/// [`FileAccess::check`].
#[inline]
pub fn admit<F, B: OpBufs>(
    stats: &Stats,
    req: Request,
    bufs: B,
    resolve: impl FnOnce(&Context) -> Result<F>,
    access: impl FnOnce(&F) -> &FileAccess,
) -> std::result::Result<(Admitted<F>, B), Refused<B>> {
    let ctx = req.context(&bufs);
    let timer = stats.start(req.op);
    let file = match resolve(&ctx) {
        Ok(file) => file,
        Err(e) => {
            timer.err();
            return Err((e, bufs));
        }
    };
    if let Err(e) = access(&file).check(&ctx, bufs.parts()) {
        timer.err();
        return Err((e, bufs));
    }
    Ok((Admitted { file, ctx, timer }, bufs))
}

impl<F: AsRef<FileAccess>> FileTable<F> {
    /// [`admit`] against this table: the file is looked up by `req.file`.
    ///
    /// # Errors
    ///
    /// As [`admit`]: [`Error::BadFile`] for an id that is not open, and the errors of
    /// [`FileAccess::check`].
    #[inline]
    pub fn admit<B: OpBufs>(
        &self,
        stats: &Stats,
        req: Request,
        bufs: B,
    ) -> std::result::Result<(Admitted<Arc<F>>, B), Refused<B>> {
        admit(
            stats,
            req,
            bufs,
            |ctx| self.get(req.file, || ctx.clone()),
            |f| (**f).as_ref(),
        )
    }

    /// [`admit`](Self::admit) for an operation without buffers.
    ///
    /// # Errors
    ///
    /// As [`admit`](Self::admit).
    #[inline]
    pub fn admit_plain(&self, stats: &Stats, req: Request) -> Result<Admitted<Arc<F>>> {
        self.admit(stats, req, ())
            .map(|(admitted, ())| admitted)
            .map_err(|(e, ())| e)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::backend::Access;
    use crate::error::BadFileReason;
    use crate::file::{DirectAlignment, OpenOptions};

    struct Rec(FileAccess);

    impl AsRef<FileAccess> for Rec {
        fn as_ref(&self) -> &FileAccess {
            &self.0
        }
    }

    fn table(options: &OpenOptions) -> (FileTable<Rec>, FileId) {
        let files = FileTable::new();
        let path: Arc<Path> = Arc::from(Path::new("f"));
        let direct = DirectAlignment {
            memory: 512,
            offset: 512,
        };
        let id = files.insert(Rec(FileAccess::new(path, options, direct)));
        (files, id)
    }

    #[test]
    fn refusals_hand_the_buffer_back_and_count_an_error() {
        let stats = Stats::new();
        let (files, id) = table(&OpenOptions::new().read(true));
        let buf = AlignedBuf::from_slice(b"abc", 4096).unwrap_or_else(|e| panic!("{e}"));
        let Err((e, buf)) = files.admit(&stats, Request::at(Op::Write, id, 0), buf) else {
            panic!("a write to a read-only file was admitted");
        };
        assert!(matches!(
            e,
            Error::BadFile {
                reason: BadFileReason::NotPermitted,
                ..
            }
        ));
        assert_eq!(&buf[..], b"abc");
        let w = stats.snapshot().op(Op::Write);
        assert_eq!((w.ops, w.errors), (1, 1));
        assert_eq!(Access::of(Op::Write), Access::Write);
    }

    #[test]
    fn admitted_operations_carry_their_context_and_timer() {
        let stats = Stats::new();
        let (files, id) = table(&OpenOptions::new().read(true).write(true).direct(true));
        let bufs = vec![AlignedBuf::zeroed(512, 4096).unwrap_or_else(|e| panic!("{e}"))];
        let Ok((admitted, bufs)) = files.admit(&stats, Request::at(Op::Writev, id, 1024), bufs)
        else {
            panic!("an aligned writev was refused");
        };
        assert_eq!(admitted.ctx.offset, Some(1024));
        assert_eq!(admitted.ctx.len, Some(512));
        admitted.timer.ok(512);
        assert_eq!(stats.snapshot().op(Op::Writev).bytes, 512);
        // Misaligned offset on a direct file, and an unknown id.
        let refused = files.admit(&stats, Request::at(Op::Writev, id, 100), bufs);
        assert!(matches!(refused, Err((Error::Misaligned { .. }, _))));
        let unknown = FileId::from_raw(99);
        let refused = files.admit_plain(&stats, Request::new(Op::Sync, unknown));
        assert!(matches!(refused, Err(Error::BadFile { .. })));
    }
}
