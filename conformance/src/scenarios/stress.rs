//! Pressure on the backend's queues: far more operations than its ring or pool holds, thousands
//! dropped mid-flight, a shutdown with operations in flight, and a linked write-then-sync whose
//! write fails.

use std::sync::Arc;
use std::time::Duration;

use diskio::{DiskIo, Error, Op, SyncKind};

use super::concurrency::{poll_then_drop, quiesce};
use super::{assert_bytes_eq, buf_of, create, pattern, read_up_to};
use crate::harness::{Cx, Outcome};
use crate::rng::{Rng, seed_from_env};

/// Size of the blocks these scenarios write: one sector, so a dropped write is all or nothing.
const BLOCK: usize = 512;

/// 4,096 writes in flight at once (16× a 256-entry ring, and far past any default queue), each
/// then read back by its task; then the whole file is checked.
pub async fn many_more_in_flight_than_ring<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    const OPS: u64 = 4096;
    let file = create(cx, "crowd").await;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..OPS {
        let disk = Arc::clone(&cx.disk);
        tasks.spawn(async move {
            let data = pattern(k, BLOCK);
            let offset = k * BLOCK as u64;
            let (res, _) = disk.write_all_at(file, buf_of(&*disk, &data), offset).await;
            res.expect("write_all_at in a crowd");
            let (res, back) = disk
                .read_exact_at(file, disk.alloc(BLOCK).expect("alloc"), offset)
                .await;
            res.expect("read_exact_at in a crowd");
            assert_bytes_eq(&format!("block {k} read back by its task"), &back, &data);
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let all = read_up_to(&*cx.disk, file, 0, OPS as usize * BLOCK).await;
    assert_eq!(all.len(), OPS as usize * BLOCK, "file length");
    for (k, got) in all.chunks(BLOCK).enumerate() {
        assert_bytes_eq(&format!("block {k}"), got, &pattern(k as u64, BLOCK));
    }
    Outcome::Passed
}

/// 10,000 writes, 500 at a time, half of them dropped after a random number of polls (those that
/// finish within their polls count as completed); then every write that completed reads back
/// intact and every dropped one left its block old or new.
pub async fn ten_thousand_ops_half_dropped<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    const OPS: u64 = 10_000;
    const WAVE: u64 = 500;
    let seed = seed_from_env("DISKIO_SEED");
    let mut rng = Rng::new(seed);
    let file = create(cx, "half-dropped").await;
    let mut completed = vec![false; OPS as usize];
    for wave in 0..OPS / WAVE {
        let mut tasks = tokio::task::JoinSet::new();
        for k in wave * WAVE..(wave + 1) * WAVE {
            let disk = Arc::clone(&cx.disk);
            let polls = if rng.one_in(2) {
                usize::MAX
            } else {
                rng.below(4) as usize
            };
            tasks.spawn(async move {
                let data = pattern(k, BLOCK);
                let write = disk.write_at(file, buf_of(&*disk, &data), k * BLOCK as u64);
                match poll_then_drop(write, polls).await {
                    Some((res, _)) => {
                        assert_eq!(
                            res.expect("awaited write"),
                            BLOCK,
                            "a sector write is whole"
                        );
                        (k, true)
                    }
                    None => (k, false),
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((k, done)) => completed[k as usize] = done,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }
    quiesce(&*cx.disk).await;
    let all = read_up_to(&*cx.disk, file, 0, OPS as usize * BLOCK).await;
    let zeros = [0u8; BLOCK];
    for (k, &done) in completed.iter().enumerate() {
        let got = all.get(k * BLOCK..(k + 1) * BLOCK).unwrap_or(&[]);
        let new = pattern(k as u64, BLOCK);
        if done {
            assert_bytes_eq(&format!("completed write {k} (seed {seed})"), got, &new);
        } else {
            // Past the last block that landed the file may end: an absent block is "old" too.
            assert!(
                got.is_empty() || got == zeros || got == new,
                "dropped write {k} left neither old nor new data (seed {seed})"
            );
        }
    }
    Outcome::Passed
}

/// A second backend from `make` gets 512 writes in flight; their tasks are aborted (futures
/// dropped mid-flight) and the backend is dropped at once. The drop must finish (waiting for
/// the kernel, never freeing memory it uses) and the file must hold, block by block, old or new
/// data.
pub async fn shutdown_with_ops_in_flight<D: DiskIo>(
    cx: &Cx<D>,
    make: impl FnOnce() -> diskio::Result<D>,
) -> Outcome {
    const OPS: u64 = 512;
    let path = cx.path("shutdown");
    let other = Arc::new(make().expect("a second backend"));
    let file = other
        .open(&path, &diskio::OpenOptions::read_write_create())
        .await
        .expect("open on the second backend");
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..OPS {
        let disk = Arc::clone(&other);
        tasks.spawn(async move {
            let data = pattern(k, BLOCK);
            let (res, _) = disk
                .write_sync_at(
                    file,
                    vec![buf_of(&*disk, &data)],
                    k * BLOCK as u64,
                    SyncKind::Data,
                )
                .await;
            res.map(drop)
        });
    }
    tokio::task::yield_now().await;
    tasks.abort_all();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(res) => res.expect("a write that finished before the abort"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    // Every handle but ours is gone: this drop is the shutdown.
    let dropper = tokio::task::spawn_blocking(move || drop(other));
    tokio::time::timeout(Duration::from_secs(60), dropper)
        .await
        .expect("the backend's drop finished within 60 s")
        .expect("the drop did not panic");

    let disk = &*cx.disk;
    let file = disk
        .open(&path, &diskio::OpenOptions::new().read(true))
        .await
        .expect("reopen after the shutdown");
    let all = read_up_to(disk, file, 0, OPS as usize * BLOCK).await;
    let zeros = [0u8; BLOCK];
    for (k, got) in all.chunks(BLOCK).enumerate() {
        let new = pattern(k as u64, BLOCK);
        assert!(
            got == zeros || got == new,
            "block {k} after a shutdown with writes in flight is neither old nor new data"
        );
    }
    Outcome::Passed
}

/// `write_sync_at` whose write the kernel refuses (at 1 PiB, past the filesystem's largest
/// file): the caller gets the write's error (`EFBIG`, operation `Writev`), never a bare
/// `ECANCELED` from the sync the failure cancelled, and never success.
pub async fn linked_write_fails<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    const FAR: u64 = 1 << 50;
    let disk = &*cx.disk;
    let file = create(cx, "linked-fail").await;
    let (res, bufs) = disk
        .write_sync_at(
            file,
            vec![buf_of(disk, &pattern(1, 4096))],
            FAR,
            SyncKind::Data,
        )
        .await;
    assert_eq!(bufs.len(), 1, "the buffer comes back");
    match res {
        Ok(n) => {
            // Some filesystems (tmpfs, xfs) take files this large: nothing failed to test. But
            // only if the file really holds the write: a backend that acknowledges a write it
            // did not make fails here instead of passing as a skip.
            let len = disk.file_len(file).await.expect("file_len");
            assert_eq!(
                (n, len),
                (4096, FAR + 4096),
                "write_sync_at at {FAR} acknowledged {n} bytes, but the file is {len} bytes long"
            );
            disk.set_len(file, 0).await.expect("shrink back");
            Outcome::Skipped(format!(
                "the scratch filesystem accepts a write at {FAR} bytes; set DISKIO_TEST_DIR to \
                 an ext4 directory to run this scenario"
            ))
        }
        Err(e) => {
            assert_ne!(
                e.raw_os_error(),
                Some(libc::ECANCELED),
                "the failure is reported as the cancelled sync, not the write: {e}"
            );
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EFBIG),
                "EFBIG expected, got {e}"
            );
            let op = e.context().map(|c| c.op);
            assert!(
                matches!(op, Some(Op::Write | Op::Writev)),
                "the error names the write, not {op:?}: {e}"
            );
            assert!(matches!(e, Error::Io { .. }));
            assert_eq!(
                disk.file_len(file).await.expect("file_len"),
                0,
                "nothing written"
            );
            Outcome::Passed
        }
    }
}
