//! Broken backends, kept to prove that the suite catches them: each wraps a working backend
//! and breaks one promise. `conformance/tests/fixtures.rs` runs the power-cut scenarios on them
//! and expects named ones to fail.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diskio::{
    AlignedBuf, BufResult, Capabilities, DirectAlignment, DiskIo, FileId, OpenOptions, Result,
    StatsSnapshot, SyncKind,
};

/// The promise a [`Flawed`] backend breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// `fsync` returns `Ok` and syncs nothing (nor does `write_sync_at`).
    NoOpSync,
    /// `write_sync_at` returns once the write is done and syncs a little later, in the
    /// background: an acknowledgement before the data is durable.
    EarlyAck,
    /// None: every call goes to the backend underneath (the control in tests).
    Control,
}

/// A working backend with one [`Flaw`].
pub struct Flawed<D> {
    inner: Arc<D>,
    flaw: Flaw,
}

impl<D: DiskIo> Flawed<D> {
    /// `inner`, broken by `flaw`.
    pub fn new(inner: D, flaw: Flaw) -> Self {
        Self {
            inner: Arc::new(inner),
            flaw,
        }
    }
}

impl<D: DiskIo> DiskIo for Flawed<D> {
    fn name(&self) -> &'static str {
        match self.flaw {
            Flaw::NoOpSync => "no-op-sync",
            Flaw::EarlyAck => "early-ack",
            Flaw::Control => self.inner.name(),
        }
    }
    fn alignment(&self) -> usize {
        self.inner.alignment()
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        caps.linked_write_sync &= self.flaw == Flaw::Control;
        caps.dsync_write &= self.flaw == Flaw::Control;
        caps
    }
    fn alloc(&self, len: usize) -> Result<AlignedBuf> {
        self.inner.alloc(len)
    }
    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        self.inner.open(path, options).await
    }
    async fn close(&self, file: FileId) -> Result<()> {
        self.inner.close(file).await
    }
    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        self.inner.read_at(file, buf, offset).await
    }
    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        self.inner.write_at(file, buf, offset).await
    }
    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        self.inner.writev_at(file, bufs, offset).await
    }
    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        match self.flaw {
            Flaw::NoOpSync => Ok(()),
            Flaw::EarlyAck | Flaw::Control => self.inner.fsync(file, kind).await,
        }
    }
    async fn preallocate(&self, file: FileId, offset: u64, len: u64) -> Result<()> {
        self.inner.preallocate(file, offset, len).await
    }
    async fn set_len(&self, file: FileId, len: u64) -> Result<()> {
        self.inner.set_len(file, len).await
    }
    async fn file_len(&self, file: FileId) -> Result<u64> {
        self.inner.file_len(file).await
    }
    fn direct_alignment(&self, file: FileId) -> Result<Option<DirectAlignment>> {
        self.inner.direct_alignment(file)
    }
    fn stats(&self) -> StatsSnapshot {
        self.inner.stats()
    }
    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.inner.sync_dir(dir).await
    }
    async fn write_sync_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        kind: SyncKind,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        if self.flaw == Flaw::Control {
            return self.inner.write_sync_at(file, bufs, offset, kind).await;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let (res, bufs) = self.inner.writev_all_at(file, bufs, offset).await;
        if let Err(e) = res {
            return (Err(e), bufs);
        }
        if self.flaw == Flaw::EarlyAck {
            let inner = Arc::clone(&self.inner);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = inner.fsync(file, kind).await;
            });
        }
        (Ok(total), bufs)
    }
}
