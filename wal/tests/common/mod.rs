//! What the WAL's test files share: options with small segments, seeded payloads, runtimes and
//! the backends with their visible fallback.
#![allow(dead_code)] // each test file uses its own part of this

use std::sync::Arc;

use conformance::Rng;
use diskio::{DiskIo, DynDiskIo};
use wal::{Wal, WalOptions};

/// 64 KiB segments, so rotation happens in every test; records up to 4 KiB.
pub fn opts() -> WalOptions {
    WalOptions::new()
        .segment_bytes(64 << 10)
        .record_max(4 << 10)
}

/// [`opts`] with records up to 8 KiB.
pub fn small() -> WalOptions {
    opts().record_max(8 << 10)
}

/// [`opts`], with `O_DIRECT` or without.
pub fn opts_direct(direct: bool) -> WalOptions {
    opts().direct_io(direct)
}

/// `len` bytes drawn from `seed`: the same seed and length always give the same record.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Every record from `from` on, read back.
pub async fn read_all<D: DiskIo>(log: &Wal<D>, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut r = log.reader(from);
    let mut out = Vec::new();
    while let Some(rec) = r.next().await.expect("read") {
        out.push((rec.lsn, rec.data));
    }
    out
}

/// Reads the log from `first` on and checks that it is contiguous and that every record is
/// `expected(lsn)`; returns the last LSN read (`first - 1` if none). `what` names the case in
/// failure messages.
pub async fn check_contiguous<D: DiskIo>(
    log: &Wal<D>,
    first: u64,
    expected: impl Fn(u64) -> Vec<u8>,
    what: &str,
) -> u64 {
    let mut reader = log.reader(first);
    let mut lsn = first - 1;
    while let Some(rec) = reader
        .next()
        .await
        .unwrap_or_else(|e| panic!("{what}: reading back: {e}"))
    {
        lsn += 1;
        assert_eq!(rec.lsn, lsn, "{what}: the log is a contiguous prefix");
        assert!(rec.data == expected(lsn), "{what}: record {lsn} is corrupt");
    }
    lsn
}

/// A count from the environment variable `var` (a longer run), else `default`.
pub fn env_count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` on a fresh two-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// The backend named `backend` (`blocking`, `raw` or `uring`, any with a `+direct` suffix that
/// the caller reads as "write with `O_DIRECT`"); `None`, with a printed skip, where io_uring is
/// not allowed.
pub fn backend(backend: &str) -> Option<Arc<dyn DynDiskIo>> {
    match backend.trim_end_matches("+direct") {
        "raw" => match diskio_raw::RawDisk::with_defaults() {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                eprintln!("SKIPPED raw backend: {e}");
                None
            }
        },
        // `write_sync_at` as a linked WRITEV -> FSYNC rather than one RWF_DSYNC write.
        "raw+linked" => {
            match diskio_raw::RawDisk::new(diskio_raw::RawOptions::new().linked_sync(true)) {
                Ok(d) => Some(Arc::new(d)),
                Err(e) => {
                    eprintln!("SKIPPED raw backend: {e}");
                    None
                }
            }
        }
        "uring" => match diskio_uring::UringDisk::with_defaults() {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                eprintln!("SKIPPED uring backend: {e}");
                None
            }
        },
        _ => Some(Arc::new(
            diskio_blocking::BlockingDisk::with_defaults().unwrap(),
        )),
    }
}

/// The raw backend, or (visibly) the blocking one where io_uring is not allowed.
pub fn raw_or_blocking() -> Arc<dyn DynDiskIo> {
    or_blocking("raw", diskio_raw::RawDisk::with_defaults())
}

/// The tokio-uring backend, or (visibly) the blocking one where io_uring is not allowed.
pub fn uring_or_blocking() -> Arc<dyn DynDiskIo> {
    or_blocking("uring", diskio_uring::UringDisk::with_defaults())
}

fn or_blocking<D: DiskIo>(name: &str, tried: diskio::Result<D>) -> Arc<dyn DynDiskIo> {
    match tried {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("SKIPPED {name} backend (io_uring unavailable: {e}); running on blocking");
            Arc::new(diskio_blocking::BlockingDisk::with_defaults().expect("blocking backend"))
        }
    }
}
