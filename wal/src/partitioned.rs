//! A partitioned log: N independent logs in subdirectories, appends routed by a key's hash.

use std::path::{Path, PathBuf};

use diskio::{AlignedBuf, DiskIo, OpenOptions, SyncKind};

use crate::error::{Result, WalError};
use crate::recovery::RecoveryReport;
use crate::{Lsn, Wal, WalOptions};

/// Name of the file that records the partition count.
const MARKER: &str = "partitions";

/// Most partitions accepted.
pub const PARTITIONS_MAX: usize = 1024;

/// N logs in subdirectories `p0000`, `p0001`, … of one directory, each with its own LSNs, order
/// and group commits; [`append`](Self::append) routes a record by a hash of its key, so the
/// records of one key stay in one partition, in order. The partition count is recorded in the
/// directory, and reopening with another count is refused (keys would move).
pub struct Partitioned<D: DiskIo> {
    parts: Vec<Wal<D>>,
}

impl<D: DiskIo> std::fmt::Debug for Partitioned<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partitioned")
            .field("partitions", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl<D: DiskIo> Partitioned<D> {
    /// Opens (or creates) `partitions` logs under `dir`, partition `i` on the backend
    /// `disk(i)` returns (the same shared backend, e.g. an `Arc<dyn DynDiskIo>` clone, or one
    /// each). Returns each partition's recovery report.
    ///
    /// # Errors
    ///
    /// [`WalError::InvalidOptions`] for 0 or more than [`PARTITIONS_MAX`] partitions, or a count
    /// other than the one the directory was created with; any error of [`Wal::open`].
    pub async fn open(
        dir: impl AsRef<Path>,
        partitions: usize,
        opts: WalOptions,
        mut disk: impl FnMut(usize) -> D,
    ) -> Result<(Self, Vec<RecoveryReport>)> {
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(WalError::InvalidOptions(format!(
                "partitions must be 1..={PARTITIONS_MAX}, not {partitions}"
            )));
        }
        let dir = dir.as_ref();
        let first = disk(0);
        check_marker(&first, dir, partitions).await?;
        let mut first = Some(first);
        let mut parts = Vec::with_capacity(partitions);
        let mut reports = Vec::with_capacity(partitions);
        for i in 0..partitions {
            let d = match first.take() {
                Some(d) => d,
                None => disk(i),
            };
            let (log, report) = Wal::open(d, partition_dir(dir, i), opts.clone()).await?;
            parts.push(log);
            reports.push(report);
        }
        Ok((Self { parts }, reports))
    }

    /// The partition of `key`: CRC32C of the key modulo the partition count (stable across
    /// runs and versions).
    pub fn partition_of(&self, key: &[u8]) -> usize {
        crc32c::crc32c(key) as usize % self.parts.len()
    }

    /// Appends `record` to the partition of `key`; returns the partition and the record's LSN in
    /// it, once done as [`Wal::append`] says.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; a poisoned partition fails alone.
    pub async fn append(&self, key: &[u8], record: &[u8]) -> Result<(usize, Lsn)> {
        let p = self.partition_of(key);
        let lsn = self.parts[p].append(record).await?;
        Ok((p, lsn))
    }

    /// Partition `i`, to read, sync or truncate it.
    pub fn partition(&self, i: usize) -> Option<&Wal<D>> {
        self.parts.get(i)
    }

    /// The number of partitions.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Always `false`: there is at least one partition.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Syncs every partition.
    ///
    /// # Errors
    ///
    /// The first partition's error, after every partition was asked.
    pub async fn sync(&self) -> Result<()> {
        let mut first_err = None;
        for p in &self.parts {
            if let Err(e) = p.sync().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Closes every partition.
    ///
    /// # Errors
    ///
    /// The first partition's error, after every partition was closed.
    pub async fn close(self) -> Result<()> {
        let mut first_err = None;
        for p in self.parts {
            if let Err(e) = p.close().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn partition_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("p{i:04}"))
}

/// Creates the marker with the partition count, or checks the one there.
async fn check_marker<D: DiskIo>(disk: &D, dir: &Path, partitions: usize) -> Result<()> {
    diskio::create_dir_all_durable(disk, dir).await?;
    let path = dir.join(MARKER);
    let exists = disk.list_dir(dir).await?.iter().any(|n| n == MARKER);
    let text = format!("{partitions}\n");
    if !exists {
        let f = disk.open(&path, &OpenOptions::read_write_create()).await?;
        let buf = AlignedBuf::from_slice(text.as_bytes(), disk.alignment())?;
        let (res, _) = disk.write_sync_at(f, vec![buf], 0, SyncKind::All).await;
        disk.close(f).await?;
        res?;
        disk.sync_dir(dir).await?;
        return Ok(());
    }
    let f = disk.open(&path, &OpenOptions::new()).await?;
    let buf = disk.alloc(64)?;
    let (res, buf) = disk.read_at(f, buf, 0).await;
    disk.close(f).await?;
    let n = res?;
    let found = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    match found {
        Some(count) if count == partitions => Ok(()),
        Some(count) => Err(WalError::InvalidOptions(format!(
            "{} holds {count} partitions, not {partitions}: keys would move to other partitions",
            dir.display()
        ))),
        None => Err(WalError::InvalidOptions(format!(
            "{} is not readable as a partition count",
            path.display()
        ))),
    }
}
