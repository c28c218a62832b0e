//! The engines: plain threads calling the system calls directly (the reference),
//! `tokio::fs`, and diskio backends through the trait.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diskio::{AlignedBuf, DiskIo, OpenOptions, SyncKind};
use diskio_blocking::{BlockingDisk, BlockingOptions};
use diskio_raw::{RawDisk, RawOptions};

use crate::report::Figures;
use crate::{Offsets, Pattern, Sample, Workload, fio};

/// An I/O path to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `depth` plain threads calling `pread`/`pwrite`/`fdatasync` (the reference).
    Threads,
    /// `depth` Tokio tasks on `tokio::fs` (seek + read/write, one file handle per task).
    TokioFs,
    /// The same on tokio's own io_uring driver (tokio 1.54, `--cfg tokio_unstable`): the
    /// `tokio-uring-ref` binary, built apart. Its reads go through io_uring; writes and syncs
    /// still go to tokio's blocking pool.
    TokioUring,
    /// `depth` Tokio tasks on the `diskio-blocking` backend.
    Blocking,
    /// `depth` Tokio tasks on the `diskio-raw` (io_uring) backend.
    Raw,
    /// `depth` Tokio tasks on the `diskio-uring` (tokio-uring) backend, one executor thread.
    Uring,
    /// fio with `--ioengine=io_uring` and `iodepth=depth`, when it is installed.
    Fio,
}

impl Engine {
    /// Name shown in the report.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Threads => "pread/pwrite threads",
            Engine::TokioFs => "tokio::fs",
            Engine::TokioUring => "tokio::fs, io_uring",
            Engine::Blocking => "diskio-blocking",
            Engine::Raw => "diskio-raw",
            Engine::Uring => "diskio-uring",
            Engine::Fio => "fio (io_uring)",
        }
    }
}

/// How the io_uring backends are set up for a run.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// For `diskio-raw`.
    pub raw: RawOptions,
    /// For `diskio-uring`.
    pub uring: diskio_uring::UringOptions,
}

/// Runs `workload` on `engine` against the file at `path`, with the backends set up as
/// `backends` says. A warm-up of a fifth of the duration (at most 200 ms) runs first and is not
/// counted.
///
/// # Errors
///
/// A message when the engine cannot run the workload (e.g. `tokio::fs` with `O_DIRECT`).
pub fn run(
    engine: Engine,
    w: &Workload,
    path: &Path,
    backends: &BackendOptions,
) -> Result<Figures, String> {
    let warmup = (w.duration / 5).min(Duration::from_millis(200));
    let sample = match engine {
        Engine::Threads => threads(w, path, warmup),
        Engine::TokioFs => tokio_fs(w, path, warmup),
        Engine::Blocking => {
            let disk = BlockingDisk::new(BlockingOptions::new().threads(w.depth.max(1)))
                .map_err(|e| e.to_string())?;
            through_trait(disk, w, path, warmup)
        }
        Engine::Raw => {
            let disk = RawDisk::new(backends.raw.clone()).map_err(|e| e.to_string())?;
            through_trait(disk, w, path, warmup)
        }
        Engine::Uring => {
            let disk =
                diskio_uring::UringDisk::new(backends.uring.clone()).map_err(|e| e.to_string())?;
            through_trait(disk, w, path, warmup)
        }
        Engine::Fio => return fio::run(w, path, warmup),
        Engine::TokioUring => return crate::tokio_uring_ref::run(w, path, warmup),
    }?;
    Ok(Figures::of_sample(&sample))
}

fn open_std(w: &Workload, path: &Path) -> Result<std::fs::File, String> {
    let write = w.pattern != Pattern::RandomRead;
    OpenOptions::new()
        .read(true)
        .write(write)
        .direct(w.direct)
        .to_std()
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

fn filled_buf(block: usize) -> Result<AlignedBuf, String> {
    let mut buf = AlignedBuf::zeroed(block, 4096).map_err(|e| e.to_string())?;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    Ok(buf)
}

/// One worker's loop: `op(n)` does the `n`th operation and returns the bytes moved.
fn time_loop(
    deadline: Instant,
    counting_from: Instant,
    mut op: impl FnMut() -> Result<u64, String>,
) -> Result<Sample, String> {
    let mut sample = Sample::empty();
    loop {
        let start = Instant::now();
        if start >= deadline {
            break;
        }
        let bytes = op()?;
        sample.record(start, Instant::now(), counting_from, bytes);
    }
    Ok(sample)
}

fn threads(w: &Workload, path: &Path, warmup: Duration) -> Result<Sample, String> {
    let file = Arc::new(open_std(w, path)?);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(5);
    let counting_from = start + warmup;
    let deadline = counting_from + w.duration;
    let w = *w;
    let handles: Vec<_> = (0..w.depth)
        .map(|t| {
            let file = Arc::clone(&file);
            let next = Arc::clone(&next);
            std::thread::spawn(move || -> Result<Sample, String> {
                let mut buf = filled_buf(w.block)?;
                let mut offsets = Offsets::new(t as u64 + 1, w.file_bytes, w.block);
                while Instant::now() < start {
                    std::hint::spin_loop();
                }
                time_loop(deadline, counting_from, || match w.pattern {
                    Pattern::RandomRead => {
                        let n = file
                            .read_at(&mut buf, offsets.random())
                            .map_err(|e| e.to_string())?;
                        Ok(n as u64)
                    }
                    Pattern::SequentialWrite | Pattern::WriteSync => {
                        let at = offsets.sequential(next.fetch_add(1, Ordering::Relaxed));
                        file.write_all_at(&buf, at).map_err(|e| e.to_string())?;
                        if w.pattern == Pattern::WriteSync {
                            file.sync_data().map_err(|e| e.to_string())?;
                        }
                        Ok(buf.len() as u64)
                    }
                })
            })
        })
        .collect();
    let mut total = Sample::empty();
    for h in handles {
        let s = h
            .join()
            .map_err(|_| "a worker thread panicked".to_owned())??;
        total.merge(&s);
    }
    total.elapsed = w.duration;
    Ok(total)
}

/// The runtime every async engine runs on: multi-thread, 2 workers, timers on.
///
/// # Errors
///
/// The reason the runtime cannot start.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn tokio_fs(w: &Workload, path: &Path, warmup: Duration) -> Result<Sample, String> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    let rt = runtime()?;
    let w = *w;
    let next = Arc::new(AtomicU64::new(0));
    rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        let start = Instant::now() + Duration::from_millis(20);
        let counting_from = start + warmup;
        let deadline = counting_from + w.duration;
        for t in 0..w.depth {
            let path = path.to_path_buf();
            let next = Arc::clone(&next);
            tasks.spawn(async move {
                let mut opts = tokio::fs::OpenOptions::new();
                opts.read(true).write(w.pattern != Pattern::RandomRead);
                if w.direct {
                    opts.custom_flags(libc::O_DIRECT);
                }
                let mut file = opts.open(&path).await.map_err(|e| format!("open: {e}"))?;
                let mut buf = vec![1u8; w.block];
                let mut offsets = Offsets::new(t as u64 + 1, w.file_bytes, w.block);
                let mut sample = Sample::empty();
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let begin = Instant::now();
                    if begin >= deadline {
                        break;
                    }
                    let bytes = match w.pattern {
                        Pattern::RandomRead => {
                            file.seek(std::io::SeekFrom::Start(offsets.random()))
                                .await
                                .map_err(|e| e.to_string())?;
                            file.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                            buf.len()
                        }
                        Pattern::SequentialWrite | Pattern::WriteSync => {
                            let at = offsets.sequential(next.fetch_add(1, Ordering::Relaxed));
                            file.seek(std::io::SeekFrom::Start(at))
                                .await
                                .map_err(|e| e.to_string())?;
                            file.write_all(&buf).await.map_err(|e| e.to_string())?;
                            if w.pattern == Pattern::WriteSync {
                                file.sync_data().await.map_err(|e| e.to_string())?;
                            } else {
                                file.flush().await.map_err(|e| e.to_string())?;
                            }
                            buf.len()
                        }
                    };
                    sample.record(begin, Instant::now(), counting_from, bytes as u64);
                }
                Ok::<Sample, String>(sample)
            });
        }
        join_tasks(tasks, w.duration).await
    })
}

/// `depth` tasks driving a diskio backend, with buffers from the backend's `alloc` (so a
/// backend with registered memory uses it).
fn through_trait<D: DiskIo>(
    disk: D,
    w: &Workload,
    path: &Path,
    warmup: Duration,
) -> Result<Sample, String> {
    let rt = runtime()?;
    let disk = Arc::new(disk);
    let w = *w;
    let next = Arc::new(AtomicU64::new(0));
    rt.block_on(async move {
        let opts = OpenOptions::new()
            .read(true)
            .write(w.pattern != Pattern::RandomRead)
            .direct(w.direct);
        let file = disk.open(path, &opts).await.map_err(|e| e.to_string())?;
        let mut tasks = tokio::task::JoinSet::new();
        let start = Instant::now() + Duration::from_millis(20);
        let counting_from = start + warmup;
        let deadline = counting_from + w.duration;
        for t in 0..w.depth {
            let disk = Arc::clone(&disk);
            let next = Arc::clone(&next);
            tasks.spawn(async move {
                let mut b = disk.alloc(w.block).map_err(|e| e.to_string())?;
                for (i, byte) in b.iter_mut().enumerate() {
                    *byte = (i % 251) as u8 + 1;
                }
                let mut buf = Some(b);
                let mut offsets = Offsets::new(t as u64 + 1, w.file_bytes, w.block);
                let mut sample = Sample::empty();
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let begin = Instant::now();
                    if begin >= deadline {
                        break;
                    }
                    let mut b = buf.take().ok_or("buffer lost")?;
                    let bytes = match w.pattern {
                        Pattern::RandomRead => {
                            let _ = b.resize(w.block);
                            let (res, back) = disk.read_at(file, b, offsets.random()).await;
                            b = back;
                            res.map_err(|e| e.to_string())?
                        }
                        Pattern::SequentialWrite => {
                            let at = offsets.sequential(next.fetch_add(1, Ordering::Relaxed));
                            let (res, back) = disk.write_all_at(file, b, at).await;
                            b = back;
                            res.map_err(|e| e.to_string())?;
                            w.block
                        }
                        Pattern::WriteSync => {
                            let at = offsets.sequential(next.fetch_add(1, Ordering::Relaxed));
                            let (res, mut back) =
                                disk.write_sync_at(file, vec![b], at, SyncKind::Data).await;
                            b = back.pop().ok_or("buffer lost")?;
                            res.map_err(|e| e.to_string())?
                        }
                    };
                    buf = Some(b);
                    sample.record(begin, Instant::now(), counting_from, bytes as u64);
                }
                Ok::<Sample, String>(sample)
            });
        }
        join_tasks(tasks, w.duration).await
    })
}

/// Waits for every task and merges their samples.
async fn join_tasks(
    mut tasks: tokio::task::JoinSet<Result<Sample, String>>,
    duration: Duration,
) -> Result<Sample, String> {
    let mut total = Sample::empty();
    while let Some(joined) = tasks.join_next().await {
        total.merge(&joined.map_err(|e| e.to_string())??);
    }
    total.elapsed = duration;
    Ok(total)
}
