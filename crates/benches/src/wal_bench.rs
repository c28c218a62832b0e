//! The WAL measured the way its users use it: `writers` tasks each appending records in a loop,
//! on a fresh log, for a fixed time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskio::DynDiskIo;
use wal::{Durability, Wal, WalOptions};

use crate::Sample;
use crate::report::Figures;

/// One WAL workload.
#[derive(Debug, Clone, Copy)]
pub struct WalWorkload {
    /// Name shown in the report.
    pub name: &'static str,
    /// Tasks appending concurrently.
    pub writers: usize,
    /// Bytes per record.
    pub record: usize,
    /// `Sync` or `None`.
    pub durability: Durability,
    /// How long one measurement runs (after a warm-up of a fifth of it, at most 200 ms).
    pub duration: Duration,
}

/// Which backend the log runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalBackend {
    /// `diskio-blocking`.
    Blocking,
    /// `diskio-raw`.
    Raw,
}

impl WalBackend {
    /// Name shown in the report.
    pub fn name(self) -> &'static str {
        match self {
            WalBackend::Blocking => "wal on diskio-blocking",
            WalBackend::Raw => "wal on diskio-raw",
        }
    }
}

/// Runs `w` on a fresh log in `dir` (created, and removed afterwards).
///
/// # Errors
///
/// A message when the backend or the log cannot start, or an append fails.
pub fn run(backend: WalBackend, w: &WalWorkload, dir: &Path) -> Result<Figures, String> {
    let disk: Arc<dyn DynDiskIo> = match backend {
        WalBackend::Blocking => {
            Arc::new(diskio_blocking::BlockingDisk::with_defaults().map_err(|e| e.to_string())?)
        }
        WalBackend::Raw => {
            Arc::new(diskio_raw::RawDisk::with_defaults().map_err(|e| e.to_string())?)
        }
    };
    let _ = std::fs::remove_dir_all(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let w = *w;
    let warmup = (w.duration / 5).min(Duration::from_millis(200));
    let result = rt.block_on(async move {
        let opts = WalOptions::new().durability(w.durability);
        let (log, _) = Wal::open(disk, dir, opts)
            .await
            .map_err(|e| e.to_string())?;
        let start = Instant::now() + Duration::from_millis(20);
        let counting_from = start + warmup;
        let deadline = counting_from + w.duration;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..w.writers {
            let log = log.clone();
            tasks.spawn(async move {
                let record = vec![(t % 251) as u8; w.record];
                let mut sample = Sample::empty();
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let begin = Instant::now();
                    if begin >= deadline {
                        break;
                    }
                    log.append(&record).await.map_err(|e| e.to_string())?;
                    sample.record(begin, Instant::now(), counting_from, w.record as u64);
                }
                Ok::<Sample, String>(sample)
            });
        }
        let mut total = Sample::empty();
        while let Some(joined) = tasks.join_next().await {
            total.merge(&joined.map_err(|e| e.to_string())??);
        }
        total.elapsed = w.duration;
        log.close().await.map_err(|e| e.to_string())?;
        Ok::<Sample, String>(total)
    });
    let _ = std::fs::remove_dir_all(dir);
    result.map(|s| Figures::of_sample(&s))
}

/// The unsynced reference: one thread appending the same frames (16-byte header and payload) to
/// a `BufWriter` over a file, never syncing.
///
/// # Errors
///
/// A message when the file cannot be written.
pub fn buf_writer(w: &WalWorkload, dir: &Path) -> Result<Figures, String> {
    use std::io::Write;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join("bufwriter.log");
    let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let record = vec![7u8; w.record];
    let warmup = (w.duration / 5).min(Duration::from_millis(200));
    let start = Instant::now();
    let counting_from = start + warmup;
    let deadline = counting_from + w.duration;
    let mut sample = Sample::empty();
    let mut lsn = 0u64;
    let result = loop {
        let begin = Instant::now();
        if begin >= deadline {
            break Ok(());
        }
        lsn += 1;
        let mut header = [0u8; 16];
        header[4..8].copy_from_slice(&(record.len() as u32).to_le_bytes());
        header[8..16].copy_from_slice(&lsn.to_le_bytes());
        if let Err(e) = out.write_all(&header).and_then(|()| out.write_all(&record)) {
            break Err(e.to_string());
        }
        sample.record(begin, Instant::now(), counting_from, w.record as u64);
    };
    drop(out);
    let _ = std::fs::remove_dir_all(dir);
    result?;
    sample.elapsed = w.duration;
    Ok(Figures::of_sample(&sample))
}
