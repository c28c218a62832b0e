//! Peer WALs, measured with the same records, writer counts and durations as ours (cargo
//! feature `peers`; kept out of the default build and of CI for their build time).
//!
//! Each peer is used the way its documentation shows for durable appends: okaywal and
//! raft-engine are blocking libraries, so their writers are threads; WriteAhead is async, so its
//! writers are Tokio tasks, as ours are.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Sample;
use crate::cpu::CpuWindow;
use crate::report::Figures;
use crate::wal_bench::WalWorkload;

/// A peer WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// okaywal: `begin_entry`, `write_chunk`, `commit` (durable).
    Okaywal,
    /// raft-engine: one `put` per `LogBatch`, `write(batch, sync = true)`.
    RaftEngine,
    /// WriteAhead: `WriteHandle::write` (durable).
    WriteAhead,
}

impl Peer {
    /// Every peer.
    pub const ALL: [Peer; 3] = [Peer::Okaywal, Peer::RaftEngine, Peer::WriteAhead];

    /// Name shown in the report.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Okaywal => "okaywal 0.3",
            Peer::RaftEngine => "raft-engine 0.4",
            Peer::WriteAhead => "writeahead 0.4",
        }
    }
}

/// Runs the durable workload `w` on `peer` in a fresh `dir` (removed afterwards). Unsynced
/// workloads are not run on peers.
///
/// # Errors
///
/// A message when the peer cannot start or an append fails.
pub fn run(peer: Peer, w: &WalWorkload, dir: &Path) -> Result<Figures, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let warmup = (w.duration / 5).min(Duration::from_millis(200));
    let out = match peer {
        Peer::Okaywal => okaywal_run(w, dir, warmup),
        Peer::RaftEngine => raft_engine_run(w, dir, warmup),
        Peer::WriteAhead => writeahead_run(w, dir, warmup),
    };
    let _ = std::fs::remove_dir_all(dir);
    out.map(|s| Figures::of_sample(&s))
}

/// `writers` threads calling `append` in a loop; merged samples.
fn threads<A>(w: &WalWorkload, warmup: Duration, append: A) -> Result<Sample, String>
where
    A: Fn(usize, &[u8]) -> Result<(), String> + Send + Sync + 'static,
{
    let append = Arc::new(append);
    let start = Instant::now() + Duration::from_millis(20);
    let counting_from = start + warmup;
    let deadline = counting_from + w.duration;
    let cpu = CpuWindow::start(counting_from, deadline);
    let handles: Vec<_> = (0..w.writers)
        .map(|t| {
            let append = Arc::clone(&append);
            let record = vec![(t % 251) as u8; w.record];
            std::thread::spawn(move || -> Result<Sample, String> {
                let mut sample = Sample::empty();
                while Instant::now() < start {
                    std::thread::sleep(Duration::from_micros(100));
                }
                loop {
                    let begin = Instant::now();
                    if begin >= deadline {
                        break;
                    }
                    append(t, &record)?;
                    sample.record(begin, Instant::now(), counting_from, record.len() as u64);
                }
                Ok(sample)
            })
        })
        .collect();
    let mut total = Sample::empty();
    for h in handles {
        total.merge(
            &h.join()
                .map_err(|_| "a writer thread panicked".to_owned())??,
        );
    }
    total.elapsed = w.duration;
    total.cpu = cpu.finish();
    Ok(total)
}

fn okaywal_run(w: &WalWorkload, dir: &Path, warmup: Duration) -> Result<Sample, String> {
    let log = okaywal::WriteAheadLog::recover(dir, okaywal::LogVoid).map_err(|e| e.to_string())?;
    let sample = threads(w, warmup, move |_, record| {
        let mut entry = log.begin_entry().map_err(|e| e.to_string())?;
        entry.write_chunk(record).map_err(|e| e.to_string())?;
        entry.commit().map_err(|e| e.to_string())?;
        Ok(())
    })?;
    Ok(sample)
}

fn raft_engine_run(w: &WalWorkload, dir: &Path, warmup: Duration) -> Result<Sample, String> {
    let cfg = raft_engine::Config {
        dir: dir.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let engine = raft_engine::Engine::open(cfg).map_err(|e| e.to_string())?;
    let seq = std::sync::atomic::AtomicU64::new(0);
    threads(w, warmup, move |t, record| {
        let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut batch = raft_engine::LogBatch::default();
        batch
            .put(t as u64 + 1, n.to_be_bytes().to_vec(), record.to_vec())
            .map_err(|e| e.to_string())?;
        engine.write(&mut batch, true).map_err(|e| e.to_string())?;
        Ok(())
    })
}

fn writeahead_run(w: &WalWorkload, dir: &Path, warmup: Duration) -> Result<Sample, String> {
    let rt = crate::engines::runtime()?;
    let w = *w;
    let dir = dir.to_path_buf();
    rt.block_on(async move {
        let mut wal = writeahead::WriteAhead::<writeahead::SimpleFile>::with_options(
            writeahead::WriteAheadOptions {
                log_dir: dir,
                ..Default::default()
            },
        );
        wal.start().map_err(|e| e.to_string())?;
        let wal = Arc::new(wal);
        let start = Instant::now() + Duration::from_millis(20);
        let counting_from = start + warmup;
        let deadline = counting_from + w.duration;
        let cpu = CpuWindow::start(counting_from, deadline);
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..w.writers {
            let handle = wal.writer().map_err(|e| e.to_string())?;
            tasks.spawn(async move {
                let record = vec![(t % 251) as u8; w.record];
                let mut sample = Sample::empty();
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let begin = Instant::now();
                    if begin >= deadline {
                        break;
                    }
                    handle
                        .write(record.clone())
                        .await
                        .map_err(|e| e.to_string())?;
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
        Ok(total)
    })
}
