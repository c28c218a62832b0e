//! A rotation that comes before the next segment is zero-filled does not wait for the zeros:
//! the fill stops, the rest of the segment is preallocated, and every record reads back, also
//! after the log is reopened. The disk here writes the prepared segment slowly, so the log
//! always catches up with its fill.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use diskio::{
    AlignedBuf, BufResult, Capabilities, DirectAlignment, DiskIo, FileId, OpenOptions, Result,
    StatsSnapshot, SyncKind,
};
use wal::{Wal, WalOptions};

/// Every write to a file being prepared (`prepared-*`) takes `delay` longer.
struct SlowFill<D> {
    inner: D,
    slow: Mutex<HashSet<FileId>>,
    delay: Duration,
}

impl<D> SlowFill<D> {
    async fn pace(&self, file: FileId) {
        let slow = self.slow.lock().unwrap().contains(&file);
        if slow {
            tokio::time::sleep(self.delay).await;
        }
    }
}

impl<D: DiskIo> DiskIo for SlowFill<D> {
    fn name(&self) -> &'static str {
        "slow-fill"
    }
    fn alignment(&self) -> usize {
        self.inner.alignment()
    }
    fn capabilities(&self) -> Capabilities {
        // Durable writes go through `writev_at` and `fsync` (the trait's default), so they pass
        // through the delay too.
        let mut caps = self.inner.capabilities();
        caps.linked_write_sync = false;
        caps.dsync_write = false;
        caps
    }
    fn alloc(&self, len: usize) -> Result<AlignedBuf> {
        self.inner.alloc(len)
    }
    async fn open(&self, path: &Path, options: &OpenOptions) -> Result<FileId> {
        let file = self.inner.open(path, options).await?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("prepared-") {
            self.slow.lock().unwrap().insert(file);
        }
        Ok(file)
    }
    async fn close(&self, file: FileId) -> Result<()> {
        self.slow.lock().unwrap().remove(&file);
        self.inner.close(file).await
    }
    async fn read_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        self.inner.read_at(file, buf, offset).await
    }
    async fn write_at(&self, file: FileId, buf: AlignedBuf, offset: u64) -> BufResult<usize> {
        self.pace(file).await;
        self.inner.write_at(file, buf, offset).await
    }
    async fn writev_at(
        &self,
        file: FileId,
        bufs: Vec<AlignedBuf>,
        offset: u64,
    ) -> BufResult<usize, Vec<AlignedBuf>> {
        self.pace(file).await;
        self.inner.writev_at(file, bufs, offset).await
    }
    async fn fsync(&self, file: FileId, kind: SyncKind) -> Result<()> {
        self.inner.fsync(file, kind).await
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
    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        self.inner.list_dir(dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> Result<()> {
        self.inner.create_dir_all(dir).await
    }
    async fn remove_file(&self, path: &Path) -> Result<()> {
        self.inner.remove_file(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.inner.sync_dir(dir).await
    }
}

/// The record with LSN `lsn`: 500 to 1,499 bytes.
fn payload(lsn: u64) -> Vec<u8> {
    common::payload(lsn ^ 0x511F, 500 + (lsn as usize * 37) % 1000)
}

fn rotation_cuts_a_slow_fill_short(backend: &str) {
    let Some(inner) = common::backend(backend) else {
        return;
    };
    let label = format!("slow-fill-{}", backend.replace('+', "-"));
    let scratch = conformance::harness::ScratchDir::new(&label);
    let dir = scratch.path().join("log");
    let direct = backend.ends_with("+direct");
    if direct {
        if let Some(reason) = conformance::harness::direct_io_refused(scratch.path()) {
            conformance::harness::report_skip(&label, &reason);
            return;
        }
    }
    // 1 MiB segments are four fill writes of 256 KiB: 100 ms each here, while the records
    // below fill a segment in far less.
    let opts = WalOptions::new()
        .segment_bytes(1 << 20)
        .record_max(4 << 10)
        .direct_io(direct);
    let records = 3_000u64;
    common::block_on(async {
        let disk = SlowFill {
            inner,
            slow: Mutex::new(HashSet::new()),
            delay: Duration::from_millis(100),
        };
        let (log, _) = Wal::open(disk, &dir, opts.clone()).await.unwrap();
        let batch: Vec<Vec<u8>> = (1..=records).map(payload).collect();
        for chunk in batch.chunks(100) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            log.append_batch(&refs).await.unwrap();
        }
        let stats = log.stats();
        assert!(stats.rotations >= 2, "the records span segments: {stats:?}");
        assert!(
            stats.fills_cut >= 1,
            "rotation cut a slow fill short rather than wait for it: {stats:?}"
        );
        let last = common::check_contiguous(&log, 1, payload, backend).await;
        assert_eq!(last, records, "{backend}: every record reads back");
        log.close().await.unwrap();

        let disk = common::backend(backend).unwrap();
        let (log, report) = Wal::open(disk, &dir, opts).await.unwrap();
        assert_eq!(report.next_lsn, records + 1, "{backend}: {report:?}");
        let last = common::check_contiguous(&log, 1, payload, backend).await;
        assert_eq!(
            last, records,
            "{backend}: every record reads back after reopening"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn rotation_cuts_a_slow_fill_short_blocking() {
    rotation_cuts_a_slow_fill_short("blocking");
}

#[test]
fn rotation_cuts_a_slow_fill_short_raw_direct() {
    rotation_cuts_a_slow_fill_short("raw+direct");
}
