//! The `DiskIo` trait: the contract every backend keeps.

use std::future::Future;
use std::io;
use std::path::Path;

use crate::buf::AlignedBuf;
use crate::error::{BufResult, Context, Error, Op, Result};
use crate::file::{Capabilities, DirectAlignment, FileId, OpenOptions, SyncKind};
use crate::stats::StatsSnapshot;

/// Asynchronous positional file I/O with owned, aligned buffers.
///
/// # The contract
///
/// - **Owned buffers in, owned buffers out.** Operations take their buffers by value and return
///   them with the result on every path, errors included ([`BufResult`]). Nothing can free or
///   move memory while the kernel uses it.
/// - **Positional.** Every read and write names its offset; there is no file cursor, so any
///   number of operations may be in flight on one file at once, from any number of tasks.
///   Operations in flight at the same time have no defined order between them; an operation
///   started after another one completed sees its effect.
/// - **Short I/O is legal.** `read_at`/`write_at`/`writev_at` may move fewer bytes than asked;
///   the `*_exact`/`*_all` helpers loop. Reading at or past end of file returns `Ok(0)`.
/// - **`O_DIRECT`.** On a file opened with [`OpenOptions::direct`], buffer addresses, offsets
///   and lengths must be aligned as [`direct_alignment`](Self::direct_alignment) says;
///   otherwise the operation fails with [`Error::Misaligned`] before the kernel is asked.
/// - **Send futures.** Backends are `Send + Sync` and every future is `Send`, so any Tokio
///   runtime (current-thread or multi-thread) and any task may drive them.
/// - **Cancellation is safe.** Dropping a future never frees or reuses memory the kernel may
///   still touch: the operation finishes in the background and its buffer is released then.
///   A dropped write may or may not have reached the file; it is never half-applied by the
///   backend itself (the kernel's own atomicity rules still apply).
/// - **Errors are typed** and carry the operation, file, offset, length and path where known.
///   Nothing panics on bad input.
/// - **A lost worker is an error, never a hang.** If the thread or task a backend runs an
///   operation on is gone (the backend shutting down, a worker that panicked, the executor of
///   a runtime being dropped), the operation fails with [`Error::Shutdown`]. Its buffers come
///   back when the backend still holds them; when they were lost with the worker, the
///   operation hands back empty ones ([`AlignedBuf::empty`], or an empty `Vec`).
///
/// Generic code (`fn f<D: DiskIo>(disk: &D)`) pays no boxing per operation. For a backend
/// chosen at run time, use [`DynDiskIo`](crate::DynDiskIo) (`Arc<dyn DynDiskIo>` implements
/// `DiskIo` too).
///
/// # Example
///
/// ```
/// use diskio::{DiskIo, OpenOptions, SyncKind};
///
/// async fn save<D: DiskIo>(disk: &D, path: &std::path::Path) -> diskio::Result<()> {
///     let file = disk.open(path, &OpenOptions::read_write_create()).await?;
///     let mut buf = disk.alloc(5)?;
///     buf.copy_from_slice(b"hello");
///     let (res, _buf) = disk.write_all_at(file, buf, 0).await;
///     res?;
///     disk.fsync(file, SyncKind::Data).await?;
///     disk.close(file).await
/// }
/// ```
pub trait DiskIo: Send + Sync + 'static {
    /// A short name for reports (`"blocking"`, `"raw"`, ...).
    fn name(&self) -> &'static str;

    /// The alignment of buffers from [`alloc`](Self::alloc): at least what `O_DIRECT` needs on
    /// the files this backend opens (4096 unless configured otherwise).
    fn alignment(&self) -> usize;

    /// What this backend does natively.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// A zeroed buffer of `len` bytes, aligned to [`alignment`](Self::alignment), possibly from
    /// the backend's pool (backends with registered memory make those buffers faster).
    ///
    /// # Errors
    ///
    /// [`Error::Alloc`] when memory runs out or `len` is absurd.
    fn alloc(&self, len: usize) -> Result<AlignedBuf> {
        AlignedBuf::zeroed(len, self.alignment())
    }

    /// Opens (or creates) the file at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with the path in its context when the OS refuses (missing file, no
    /// permission, ...). A directory is refused with `EISDIR` whatever the options: backends
    /// do positional I/O on regular files (and block devices).
    fn open(
        &self,
        path: &Path,
        options: &OpenOptions,
    ) -> impl Future<Output = Result<FileId>> + Send;

    /// Closes the file. Operations already in flight on it finish first; later ones fail with
    /// [`Error::BadFile`] ([`BadFileReason::Closed`](crate::BadFileReason::Closed)).
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] if the id is unknown or already closed.
    fn close(&self, file: FileId) -> impl Future<Output = Result<()>> + Send;

    /// Reads up to `buf.len()` bytes at `offset` into the start of `buf`.
    ///
    /// On success returns the number of bytes read, `n`, and the buffer truncated to `n`
    /// (`buf.len() == n`), so its contents are exactly what was read. `n` may be less than
    /// asked (a short read, e.g. at the end of the file); `0` means `offset` is at or past the
    /// end. On error the buffer comes back with its length unchanged and its contents
    /// unspecified.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`], [`Error::Misaligned`] (direct files), [`Error::InvalidInput`]
    /// (offset + length past `i64::MAX`), [`Error::Io`].
    fn read_at(
        &self,
        file: FileId,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize>> + Send;

    /// Writes `buf[..]` at `offset`; returns the number of bytes written, which may be less than
    /// `buf.len()` (a short write). The buffer comes back unchanged.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Self::read_at).
    fn write_at(
        &self,
        file: FileId,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize>> + Send;

    /// Writes the buffers back to back starting at `offset`, in order; returns the total number
    /// of bytes written, which may be less than the sum (a short write: a prefix of the
    /// concatenation was written). Any number of buffers is accepted (more than `IOV_MAX` is
    /// split into several system calls by the backend). The buffers come back unchanged.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Self::read_at). On direct files every buffer's address and length must be
    /// aligned. If the OS fails after part of the data was written, the call returns that part
    /// as a short write (as `pwritev` does); the error shows on the next attempt.
    fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Vec<AlignedBuf>>> + Send;

    /// Makes the file's written data durable: [`SyncKind::Data`] is `fdatasync`,
    /// [`SyncKind::All`] is `fsync`. Writes that completed before the call are covered.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]. After a failed sync, the data it should have covered may be lost even if a
    /// later sync succeeds: do not retry and assume durability.
    fn fsync(&self, file: FileId, kind: SyncKind) -> impl Future<Output = Result<()>> + Send;

    /// Reserves space for `offset..offset + len` (`fallocate` mode 0): the file grows to at
    /// least `offset + len` bytes, the new bytes read as zeros, and later writes in the range
    /// will not fail for lack of space. A `len` of 0 is a no-op that succeeds (the backend does
    /// not ask the OS, whose `fallocate(2)` refuses it with `EINVAL`); the conformance suite
    /// checks it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`EOPNOTSUPP` where the filesystem cannot preallocate; not emulated).
    fn preallocate(
        &self,
        file: FileId,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Sets the file's length: shrinking drops bytes, growing adds zeros.
    ///
    /// # Errors
    ///
    /// [`Error::Io`], [`Error::InvalidInput`] past `i64::MAX`.
    fn set_len(&self, file: FileId, len: u64) -> impl Future<Output = Result<()>> + Send;

    /// The file's current length in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`], [`Error::Io`].
    fn file_len(&self, file: FileId) -> impl Future<Output = Result<u64>> + Send;

    /// The alignment `O_DIRECT` requires on this file, or `None` if the file is not direct.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`].
    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>>;

    /// Counters and latency histograms of this backend since it was created.
    fn stats(&self) -> StatsSnapshot;

    /// The names of the regular files in directory `dir` (not its subdirectories), sorted.
    ///
    /// The directory operations (`list_dir`, `create_dir_all`, `remove_file`, `rename`,
    /// `sync_dir`) are
    /// rare metadata work (a log creating or dropping a segment). Their provided versions call
    /// `std::fs` on the calling thread; a backend with its own namespace (such as an in-memory
    /// test disk) overrides them.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (a missing directory is `NotFound`).
    fn list_dir(&self, dir: &Path) -> impl Future<Output = Result<Vec<String>>> + Send {
        let ctx = Context::new(Op::Dir).path(dir);
        let listed = (|| {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    if let Ok(name) = entry.file_name().into_string() {
                        names.push(name);
                    }
                }
            }
            names.sort();
            Ok(names)
        })()
        .map_err(|e| Error::io(ctx, e));
        std::future::ready(listed)
    }

    /// Creates directory `dir` and any missing parents.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    fn create_dir_all(&self, dir: &Path) -> impl Future<Output = Result<()>> + Send {
        let res =
            std::fs::create_dir_all(dir).map_err(|e| Error::io(Context::new(Op::Dir).path(dir), e));
        std::future::ready(res)
    }

    /// Removes the file at `path`. The removal is durable only after
    /// [`sync_dir`](Self::sync_dir) of its directory.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`NotFound` if there is no such file).
    fn remove_file(&self, path: &Path) -> impl Future<Output = Result<()>> + Send {
        let res =
            std::fs::remove_file(path).map_err(|e| Error::io(Context::new(Op::Dir).path(path), e));
        std::future::ready(res)
    }

    /// Renames the file at `from` to `to`, replacing `to` if it exists. The new name is durable
    /// only after [`sync_dir`](Self::sync_dir) of its directory. Files open under the old name
    /// stay open.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = Result<()>> + Send {
        let res =
            std::fs::rename(from, to).map_err(|e| Error::io(Context::new(Op::Dir).path(from), e));
        std::future::ready(res)
    }

    /// Makes the entries of directory `dir` durable: files created, renamed or removed in it
    /// survive a power loss only once this returns (`fsync` of the directory).
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    fn sync_dir(&self, dir: &Path) -> impl Future<Output = Result<()>> + Send {
        let res = std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(Context::new(Op::Dir).path(dir), e));
        std::future::ready(res)
    }

    /// Reads exactly `buf.len()` bytes at `offset`, looping over short reads.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Self::read_at); reaching end of file first is an [`Error::Io`] of kind
    /// [`io::ErrorKind::UnexpectedEof`], with the buffer truncated to what was read.
    fn read_exact_at(
        &self,
        file: FileId,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = BufResult<()>> + Send {
        async move {
            let want = buf.len();
            let (res, mut buf) = self.read_at(file, buf, offset).await;
            let mut done = match res {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
            // Rare path (end of file, signals): read the rest into a second buffer and copy.
            while done < want {
                let rest = match self.alloc(want - done) {
                    Ok(b) => b,
                    Err(e) => return (Err(e), buf),
                };
                let (res, rest) = self.read_at(file, rest, offset + done as u64).await;
                match res {
                    Ok(0) => {
                        let ctx = Context::new(Op::Read)
                            .file(file)
                            .offset(offset)
                            .len(want as u64);
                        let msg = format!("end of file after {done} of {want} bytes");
                        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, msg);
                        return (Err(Error::io(ctx, eof)), buf);
                    }
                    Ok(n) => {
                        if let Err(e) = buf.extend_from_slice(&rest[..n]) {
                            return (Err(e), buf);
                        }
                        done += n;
                    }
                    Err(e) => return (Err(e), buf),
                }
            }
            (Ok(()), buf)
        }
    }

    /// Writes all of `buf` at `offset`, looping over short writes.
    ///
    /// # Errors
    ///
    /// As [`write_at`](Self::write_at); a write that makes no progress is an [`Error::Io`] of
    /// kind [`io::ErrorKind::WriteZero`]. Part of the buffer may have been written.
    fn write_all_at(
        &self,
        file: FileId,
        buf: AlignedBuf,
        offset: u64,
    ) -> impl Future<Output = BufResult<()>> + Send {
        async move {
            let (res, buf) = self.write_at(file, buf, offset).await;
            match res {
                Ok(n) if n == buf.len() => (Ok(()), buf),
                Ok(n) => {
                    let res = write_tail(self, file, &buf, n, offset).await;
                    (res, buf)
                }
                Err(e) => (Err(e), buf),
            }
        }
    }

    /// Writes all the buffers back to back at `offset`, looping over short writes.
    ///
    /// # Errors
    ///
    /// As [`writev_at`](Self::writev_at) and [`write_all_at`](Self::write_all_at).
    fn writev_all_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> impl Future<Output = BufResult<(), Vec<AlignedBuf>>> + Send {
        async move {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let (res, bufs) = self.writev_at(file, bufs, offset).await;
            let mut written = match res {
                Ok(n) if n == total => return (Ok(()), bufs),
                Ok(n) => n,
                Err(e) => return (Err(e), bufs),
            };
            // Short vectored write: finish buffer by buffer.
            let mut start = 0usize;
            for buf in &bufs {
                let end = start + buf.len();
                if written < end {
                    let skip = written - start;
                    let at = offset + written as u64;
                    if let Err(e) = write_tail(self, file, buf, skip, at - skip as u64).await {
                        return (Err(e), bufs);
                    }
                    written = end;
                }
                start = end;
            }
            (Ok(()), bufs)
        }
    }

    /// Writes all the buffers at `offset` and then syncs with `kind`; returns the bytes written
    /// only once they are durable.
    ///
    /// The provided version is [`writev_all_at`](Self::writev_all_at) followed by
    /// [`fsync`](Self::fsync). Backends that can link the two into one kernel submission
    /// override it (and say so in [`Capabilities::linked_write_sync`]); backends whose write is
    /// made durable by the kernel itself (`RWF_DSYNC`) say so in
    /// [`Capabilities::dsync_write`]. What is promised durable is what this call writes; only
    /// a backend that syncs separately also flushes earlier buffered writes elsewhere in the
    /// file, so call [`fsync`](Self::fsync) for those.
    ///
    /// # Errors
    ///
    /// The write's error if the write failed (the sync is then not attempted), else the sync's
    /// (a `RWF_DSYNC` write reports both as the write's). Never success for data that was not
    /// synced.
    fn write_sync_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        kind: SyncKind,
    ) -> impl Future<Output = BufResult<usize, Vec<AlignedBuf>>> + Send {
        write_then_sync(self, file, bufs, offset, kind)
    }
}

/// Creates `dir` and any missing parents, durably: each directory it creates is then synced
/// into its parent, so a power cut cannot take away a directory (and the files made durable in
/// it) whose creation was never synced. [`DiskIo::create_dir_all`] alone promises no more than
/// `mkdir -p`. Existing directories are left as they are.
///
/// # Errors
///
/// [`Error::Io`] from listing, creating or syncing a directory.
pub async fn create_dir_all_durable<D: DiskIo + ?Sized>(disk: &D, dir: &Path) -> Result<()> {
    // The directories to create, deepest first.
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty()) {
        match disk.list_dir(p).await {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(p);
                at = p.parent();
            }
            Err(e) => return Err(e),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    disk.create_dir_all(dir).await?;
    for created in missing.iter().rev() {
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        disk.sync_dir(parent).await?;
    }
    Ok(())
}

/// [`DiskIo::write_sync_at`] the provided way: [`writev_all_at`](DiskIo::writev_all_at), then
/// [`fsync`](DiskIo::fsync). For backends that override `write_sync_at` and fall back to this
/// in the cases they cannot link (too many buffers, a short linked write).
///
/// # Errors
///
/// As [`DiskIo::write_sync_at`].
pub async fn write_then_sync<D: DiskIo + ?Sized>(
    disk: &D,
    file: FileId,
    bufs: Vec<AlignedBuf>,
    offset: u64,
    kind: SyncKind,
) -> BufResult<usize, Vec<AlignedBuf>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let (res, bufs) = disk.writev_all_at(file, bufs, offset).await;
    if let Err(e) = res {
        return (Err(e), bufs);
    }
    match disk.fsync(file, kind).await {
        Ok(()) => (Ok(total), bufs),
        Err(e) => (Err(e), bufs),
    }
}

/// Writes `buf[from..]` at `offset + from` through a copy (the rare path after a short write),
/// looping until done.
async fn write_tail<D: DiskIo + ?Sized>(
    disk: &D,
    file: FileId,
    buf: &AlignedBuf,
    from: usize,
    offset: u64,
) -> Result<()> {
    let mut done = from;
    while done < buf.len() {
        let mut rest = AlignedBuf::with_capacity(buf.len() - done, disk.alignment())?;
        rest.extend_from_slice(&buf[done..])?;
        let at = offset + done as u64;
        let (res, _rest) = disk.write_at(file, rest, at).await;
        match res? {
            0 => {
                let ctx = Context::new(Op::Write)
                    .file(file)
                    .offset(at)
                    .len((buf.len() - done) as u64);
                let err = io::Error::new(io::ErrorKind::WriteZero, "write made no progress");
                return Err(Error::io(ctx, err));
            }
            n => done += n,
        }
    }
    Ok(())
}
