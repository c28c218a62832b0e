//! The WAL measured the way its users use it: `writers` tasks each appending records in a loop,
//! on a fresh log, for a fixed time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskio::{DiskIo, DynDiskIo};
use wal::{Durability, Wal, WalOptions};

use crate::Sample;
use crate::cpu::CpuWindow;
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
    /// Segment size, when not the default (64 MiB).
    pub segment_bytes: Option<u64>,
    /// How long one measurement runs (after a warm-up of a fifth of it, at most 200 ms).
    pub duration: Duration,
    /// On a memory filesystem (`/dev/shm`) rather than the disk: syncs cost next to nothing
    /// there, so a durable figure is each log's own cost per commit (its code and system calls).
    pub in_memory: bool,
}

impl WalWorkload {
    /// Where this workload's logs go: `scratch/wal`, or for an in-memory workload a directory
    /// under `/dev/shm` (a tmpfs on Linux).
    pub fn dir(&self, scratch: &Path) -> PathBuf {
        if self.in_memory {
            Path::new("/dev/shm").join(format!("diskio-bench-wal-{}", std::process::id()))
        } else {
            scratch.join("wal")
        }
    }
}

/// The WAL workloads of `diskio-bench`, each measured for `duration`.
pub fn workloads(duration: Duration) -> Vec<WalWorkload> {
    let w = |name, writers, durability| WalWorkload {
        name,
        writers,
        record: 256,
        durability,
        duration,
        segment_bytes: None,
        in_memory: false,
    };
    vec![
        w("WAL durable, 1 writer", 1, Durability::Sync),
        // The same on tmpfs, where a sync costs next to nothing: each log's own cost per commit.
        WalWorkload {
            in_memory: true,
            ..w("WAL durable, 1 writer, tmpfs", 1, Durability::Sync)
        },
        w("WAL durable, 64 writers", 64, Durability::Sync),
        // A rotation every ~4 groups: 64 writers' groups of ~17 KiB into 64 KiB segments.
        WalWorkload {
            segment_bytes: Some(64 << 10),
            ..w("WAL durable, 64 writers, 64K segs", 64, Durability::Sync)
        },
        w("WAL durable, 1024 writers", 1024, Durability::Sync),
        w("WAL unsynced, 1 writer", 1, Durability::None),
        WalWorkload {
            record: 128,
            ..w("WAL unsynced, 4 writers, 128 B", 4, Durability::None)
        },
    ]
}

/// Which backend the log runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalBackend {
    /// `diskio-blocking`.
    Blocking,
    /// `diskio-raw`.
    Raw,
    /// `diskio-uring`.
    Uring,
    /// `diskio-blocking`, segments written through the page cache (`direct_io(false)`).
    BlockingBuffered,
    /// `diskio-raw`, segments written through the page cache.
    RawBuffered,
}

impl WalBackend {
    /// Name shown in the report.
    pub fn name(self) -> &'static str {
        match self {
            WalBackend::Blocking => "wal on diskio-blocking",
            WalBackend::Raw => "wal on diskio-raw",
            WalBackend::Uring => "wal on diskio-uring",
            WalBackend::BlockingBuffered => "wal on blocking, buffered",
            WalBackend::RawBuffered => "wal on raw, buffered",
        }
    }

    /// Whether the log writes its segments with `O_DIRECT` (the default).
    pub fn direct(self) -> bool {
        !matches!(self, WalBackend::BlockingBuffered | WalBackend::RawBuffered)
    }

    /// A new backend of this kind, with default options, behind the object-safe form (for the
    /// replay figures, where one call moves a whole window).
    fn disk(self) -> Result<Arc<dyn DynDiskIo>, String> {
        Ok(match self {
            WalBackend::Blocking | WalBackend::BlockingBuffered => {
                Arc::new(diskio_blocking::BlockingDisk::with_defaults().map_err(|e| e.to_string())?)
            }
            WalBackend::Raw | WalBackend::RawBuffered => {
                Arc::new(diskio_raw::RawDisk::with_defaults().map_err(|e| e.to_string())?)
            }
            WalBackend::Uring => {
                Arc::new(diskio_uring::UringDisk::with_defaults().map_err(|e| e.to_string())?)
            }
        })
    }
}

/// Runs `w` on a fresh log in `dir` (created, and removed afterwards), on the backend's own
/// type, as a service that picks its backend at build time does (no boxed future per
/// operation).
///
/// # Errors
///
/// A message when the backend or the log cannot start, or an append fails.
pub fn run(backend: WalBackend, w: &WalWorkload, dir: &Path) -> Result<Figures, String> {
    let e = |e: diskio::Error| e.to_string();
    match backend {
        WalBackend::Blocking | WalBackend::BlockingBuffered => {
            let disk = diskio_blocking::BlockingDisk::with_defaults().map_err(e)?;
            run_on(disk, backend, w, dir)
        }
        WalBackend::Raw | WalBackend::RawBuffered => run_on(
            diskio_raw::RawDisk::with_defaults().map_err(e)?,
            backend,
            w,
            dir,
        ),
        WalBackend::Uring => run_on(
            diskio_uring::UringDisk::with_defaults().map_err(e)?,
            backend,
            w,
            dir,
        ),
    }
}

fn run_on<D: DiskIo>(
    disk: D,
    backend: WalBackend,
    w: &WalWorkload,
    dir: &Path,
) -> Result<Figures, String> {
    let _ = std::fs::remove_dir_all(dir);
    let rt = crate::engines::runtime()?;
    let w = *w;
    let warmup = (w.duration / 5).min(Duration::from_millis(200));
    let result = rt.block_on(async move {
        let mut opts = WalOptions::new()
            .durability(w.durability)
            .direct_io(backend.direct());
        if let Some(bytes) = w.segment_bytes {
            // Small segments need small records: one largest record must fit in a segment.
            opts = opts.segment_bytes(bytes).record_max(4 << 10);
        }
        let (log, _) = Wal::open(disk, dir, opts)
            .await
            .map_err(|e| e.to_string())?;
        let start = Instant::now() + Duration::from_millis(20);
        let counting_from = start + warmup;
        let deadline = counting_from + w.duration;
        let cpu = CpuWindow::start(counting_from, deadline);
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
        total.cpu = cpu.finish();
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
    let cpu = CpuWindow::start(counting_from, deadline);
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
    sample.cpu = cpu.finish();
    Ok(Figures::of_sample(&sample))
}

/// One replay measurement: the log's reader over every record, and a plain `pread` loop over the
/// same segment files (the reference), both from the page cache.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    /// Payload bytes per second through the reader.
    pub reader_bytes_s: f64,
    /// Records per second through the reader.
    pub reader_records_s: f64,
    /// Payload bytes per second through `Reader::next_batch` (borrowed, not copied).
    pub batch_bytes_s: f64,
    /// File bytes per second through 1 MiB `pread`s of the same files.
    pub pread_bytes_s: f64,
    /// Microseconds from `reader(lsn)` to its first record, median over random LSNs inside the
    /// first segment (the sparse index finds where to start).
    pub seek_us: f64,
    /// The same, 99th percentile.
    pub seek_p99_us: f64,
    /// Microseconds to reach a random LSN by reading from the segment's first record (what a
    /// reader did before the index), median.
    pub scan_us: f64,
}

/// Fills a fresh log in `dir` with `records` records of `record` bytes (unsynced, then synced
/// and closed), reopens it, warms the page cache, and times reading everything back.
///
/// # Errors
///
/// A message when the log cannot be written or read.
pub fn replay(
    backend: WalBackend,
    records: u64,
    record: usize,
    dir: &Path,
) -> Result<Replay, String> {
    let disk = backend.disk()?;
    let _ = std::fs::remove_dir_all(dir);
    let rt = crate::engines::runtime()?;
    let result = rt.block_on(async {
        let opts = WalOptions::new().durability(Durability::None);
        let (log, _) = Wal::open(Arc::clone(&disk), dir, opts.clone())
            .await
            .map_err(|e| e.to_string())?;
        let data = vec![0x5Au8; record];
        let batch: Vec<&[u8]> = (0..1000).map(|_| &data[..]).collect();
        let mut written = 0;
        while written < records {
            let n = (records - written).min(1000) as usize;
            log.append_batch(&batch[..n])
                .await
                .map_err(|e| e.to_string())?;
            written += n as u64;
        }
        log.close().await.map_err(|e| e.to_string())?;
        // Reopening scans every segment: the page cache is warm after it.
        let (log, _) = Wal::open(disk, dir, opts)
            .await
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut reader = log.reader(1);
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut data = Vec::new();
        while reader
            .next_into(&mut data)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            n += 1;
            bytes += data.len() as u64;
        }
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        if n != records {
            return Err(format!("read back {n} records of {records}"));
        }
        // The same in borrowed batches.
        let start = Instant::now();
        let mut reader = log.reader(1);
        let (mut batch_n, mut batch_bytes) = (0u64, 0u64);
        while let Some(batch) = reader.next_batch().await.map_err(|e| e.to_string())? {
            for (_, data) in batch.iter() {
                batch_n += 1;
                batch_bytes += data.len() as u64;
            }
        }
        let batch_secs = start.elapsed().as_secs_f64().max(1e-9);
        drop(reader);
        // Seeks: random LSNs in the first fifth of the log (inside its first segment when the
        // log spans several).
        let span = (records / 5).max(2);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut random_lsn = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + state % span
        };
        let mut seeks = Vec::new();
        for _ in 0..200 {
            let lsn = random_lsn();
            let t = Instant::now();
            let mut r = log.reader(lsn);
            let got = r.next_into(&mut data).await.map_err(|e| e.to_string())?;
            seeks.push(t.elapsed().as_secs_f64() * 1e6);
            if got != Some(lsn) {
                return Err(format!("a reader from {lsn} returned {got:?} first"));
            }
        }
        let mut scans = Vec::new();
        for _ in 0..15 {
            let lsn = random_lsn();
            let t = Instant::now();
            let mut r = log.reader(1);
            while let Some(l) = r.next_into(&mut data).await.map_err(|e| e.to_string())? {
                if l == lsn {
                    break;
                }
            }
            scans.push(t.elapsed().as_secs_f64() * 1e6);
        }
        seeks.sort_by(f64::total_cmp);
        scans.sort_by(f64::total_cmp);
        let seek = (
            seeks[seeks.len() / 2],
            seeks[seeks.len() * 99 / 100],
            scans[scans.len() / 2],
        );
        log.close().await.map_err(|e| e.to_string())?;
        if batch_n != records {
            return Err(format!(
                "read back {batch_n} records of {records} in batches"
            ));
        }
        Ok::<_, String>((
            bytes as f64 / secs,
            n as f64 / secs,
            batch_bytes as f64 / batch_secs,
            seek,
        ))
    });
    let (reader_bytes_s, reader_records_s, batch_bytes_s, (seek_us, seek_p99_us, scan_us)) =
        match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                return Err(e);
            }
        };
    let pread_bytes_s = pread_all(dir).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Replay {
        reader_bytes_s,
        reader_records_s,
        batch_bytes_s,
        pread_bytes_s,
        seek_us,
        seek_p99_us,
        scan_us,
    })
}

/// Reads every `.wal` file of `dir` with 1 MiB `pread`s; bytes per second.
fn pread_all(dir: &Path) -> std::io::Result<f64> {
    use std::os::unix::fs::FileExt;
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0u64;
    for path in files {
        let f = std::fs::File::open(path)?;
        let mut at = 0;
        loop {
            let n = f.read_at(&mut buf, at)?;
            if n == 0 {
                break;
            }
            at += n as u64;
            total += n as u64;
        }
    }
    Ok(total as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// Prints (and adds to `json_rows`) the replay and seek figures of `records` records of 256 B
/// on the raw and blocking backends: medians of `runs` runs in `dir`.
pub fn print_replay(records: u64, runs: usize, dir: &Path, json_rows: &mut Vec<serde_json::Value>) {
    for backend in [WalBackend::Raw, WalBackend::Blocking] {
        let measured: Result<Vec<Replay>, String> = (0..runs)
            .map(|_| replay(backend, records, 256, dir))
            .collect();
        match measured {
            Ok(v) => {
                let med = |f: fn(&Replay) -> f64| {
                    let mut x: Vec<f64> = v.iter().map(f).collect();
                    x.sort_by(f64::total_cmp);
                    x[x.len() / 2]
                };
                let gib = f64::from(1u32 << 30);
                let (r, n, b, p) = (
                    med(|r| r.reader_bytes_s),
                    med(|r| r.reader_records_s),
                    med(|r| r.batch_bytes_s),
                    med(|r| r.pread_bytes_s),
                );
                println!(
                    "WAL replay from the page cache, {}: next_batch {:.2} GiB/s of records \
                     ({:.2}x 1 MiB preads of the same files, {:.2} GiB/s); next_into {:.2} GiB/s \
                     ({:.2}M records/s, {records} x 256 B)",
                    backend.name(),
                    b / gib,
                    b / p,
                    p / gib,
                    r / gib,
                    n / 1e6,
                );
                let (seek, seek99, scan) = (
                    med(|r| r.seek_us),
                    med(|r| r.seek_p99_us),
                    med(|r| r.scan_us),
                );
                println!(
                    "WAL seek from the page cache, {}: first record from a random LSN in the first \
                     segment in {seek:.1} us (p99 {seek99:.1} us), against {scan:.0} us reading \
                     from the segment's start ({:.0}x)",
                    backend.name(),
                    scan / seek
                );
                json_rows.push(serde_json::json!({
                    "table": "replay",
                    "engine": backend.name(),
                    "figures": {
                        "records": records,
                        "seek_us": seek,
                        "seek_p99_us": seek99,
                        "scan_us": scan,
                        "next_batch_bytes_s": b,
                        "next_into_bytes_s": r,
                        "next_into_records_s": n,
                        "pread_bytes_s": p,
                    },
                }));
            }
            Err(e) => {
                println!("WAL replay, {}: cannot run: {e}", backend.name());
                json_rows.push(serde_json::json!({
                    "table": "replay",
                    "engine": backend.name(),
                    "figures": { "error": e },
                }));
            }
        }
    }
}
