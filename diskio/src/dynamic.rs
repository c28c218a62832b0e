//! The object-safe form of [`DiskIo`], for a backend chosen at run time.
//!
//! Every `DiskIo` is a `DynDiskIo` (blanket impl), and `Arc<dyn DynDiskIo>` is a `DiskIo`
//! again, so generic code such as a `Wal<D: DiskIo>` runs unchanged on a backend picked from a
//! configuration file. The price is one boxed future per operation; generic use pays none.
//!
//! ```
//! use std::sync::Arc;
//! use diskio::{DiskIo, DynDiskIo};
//!
//! fn pick(backend: Arc<dyn DynDiskIo>) -> impl DiskIo {
//!     backend // usable wherever a `DiskIo` is expected
//! }
//! ```

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::buf::AlignedBuf;
use crate::disk::DiskIo;
use crate::error::{BufResult, Result};
use crate::file::{Capabilities, DirectAlignment, FileId, OpenOptions, SyncKind};
use crate::stats::StatsSnapshot;

/// Object-safe mirror of [`DiskIo`]'s required operations (plus the linked write-then-sync,
/// so a backend's override survives type erasure). See `DiskIo` for each contract.
#[async_trait]
pub trait DynDiskIo: Send + Sync + 'static {
    /// See [`DiskIo::name`].
    fn name(&self) -> &'static str;
    /// See [`DiskIo::alignment`].
    fn alignment(&self) -> usize;
    /// See [`DiskIo::capabilities`].
    fn capabilities(&self) -> Capabilities;
    /// See [`DiskIo::alloc`].
    fn alloc(&self, len: usize) -> Result<AlignedBuf>;
    /// See [`DiskIo::open`].
    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId>;
    /// See [`DiskIo::close`].
    async fn close(&self, file: FileId) -> Result<()>;
    /// See [`DiskIo::read_at`].
    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize>;
    /// See [`DiskIo::write_at`].
    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize>;
    /// See [`DiskIo::writev_at`].
    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>>;
    /// See [`DiskIo::fsync`].
    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()>;
    /// See [`DiskIo::preallocate`].
    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()>;
    /// See [`DiskIo::set_len`].
    async fn set_len(&self, file: FileId, len: u64) -> Result<()>;
    /// See [`DiskIo::file_len`].
    async fn file_len(&self, file: FileId) -> Result<u64>;
    /// See [`DiskIo::write_sync_at`].
    async fn write_sync_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        kind: SyncKind,
    ) -> BufResult<usize, Vec<AlignedBuf>>;
    /// See [`DiskIo::direct_alignment`].
    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>>;
    /// See [`DiskIo::stats`].
    fn stats(&self) -> StatsSnapshot;
    /// See [`DiskIo::list_dir`].
    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>>;
    /// See [`DiskIo::create_dir_all`].
    async fn create_dir_all(&self, dir: &Path) -> Result<()>;
    /// See [`DiskIo::remove_file`].
    async fn remove_file(&self, path: &Path) -> Result<()>;
    /// See [`DiskIo::rename`].
    async fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// See [`DiskIo::sync_dir`].
    async fn sync_dir(&self, dir: &Path) -> Result<()>;
}

#[async_trait]
impl<T: DiskIo> DynDiskIo for T {
    fn name(&self) -> &'static str {
        DiskIo::name(self)
    }
    fn alignment(&self) -> usize {
        DiskIo::alignment(self)
    }
    fn capabilities(&self) -> Capabilities {
        DiskIo::capabilities(self)
    }
    fn alloc(&self, len: usize) -> Result<AlignedBuf> {
        DiskIo::alloc(self, len)
    }
    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        DiskIo::open(self, path, options).await
    }
    async fn close(&self, file: FileId) -> Result<()> {
        DiskIo::close(self, file).await
    }
    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        DiskIo::read_at(self, file, buf, offset).await
    }
    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        DiskIo::write_at(self, file, buf, offset).await
    }
    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        DiskIo::writev_at(self, file, bufs, offset).await
    }
    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        DiskIo::fsync(self, file, kind).await
    }
    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        DiskIo::preallocate(self, file, offset, len).await
    }
    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        DiskIo::set_len(self, file, len).await
    }
    async fn file_len(&self, file: FileId) -> Result<u64> {
        DiskIo::file_len(self, file).await
    }
    async fn write_sync_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        kind: SyncKind,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        DiskIo::write_sync_at(self, file, bufs, offset, kind).await
    }
    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>> {
        DiskIo::direct_alignment(self, file)
    }
    fn stats(&self) -> StatsSnapshot {
        DiskIo::stats(self)
    }
    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        DiskIo::list_dir(self, dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> Result<()> {
        DiskIo::create_dir_all(self, dir).await
    }
    async fn remove_file(&self, path: &Path) -> Result<()> {
        DiskIo::remove_file(self, path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        DiskIo::rename(self, from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        DiskIo::sync_dir(self, dir).await
    }
}

impl DiskIo for Arc<dyn DynDiskIo> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn alignment(&self) -> usize {
        (**self).alignment()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn alloc(&self, len: usize) -> Result<AlignedBuf> {
        (**self).alloc(len)
    }
    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        (**self).open(path, options).await
    }
    async fn close(&self, file: FileId) -> Result<()> {
        (**self).close(file).await
    }
    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        (**self).read_at(file, buf, offset).await
    }
    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        (**self).write_at(file, buf, offset).await
    }
    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        (**self).writev_at(file, bufs, offset).await
    }
    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        (**self).fsync(file, kind).await
    }
    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        (**self).preallocate(file, offset, len).await
    }
    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        (**self).set_len(file, len).await
    }
    async fn file_len(&self, file: FileId) -> Result<u64> {
        (**self).file_len(file).await
    }
    async fn write_sync_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        kind: SyncKind,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        (**self).write_sync_at(file, bufs, offset, kind).await
    }
    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>> {
        (**self).direct_alignment(file)
    }
    fn stats(&self) -> StatsSnapshot {
        (**self).stats()
    }
    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        (**self).list_dir(dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> Result<()> {
        (**self).create_dir_all(dir).await
    }
    async fn remove_file(&self, path: &Path) -> Result<()> {
        (**self).remove_file(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        (**self).rename(from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        (**self).sync_dir(dir).await
    }
}
