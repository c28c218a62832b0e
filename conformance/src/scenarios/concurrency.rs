//! Many operations at once, and futures dropped mid-flight.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use diskio::{DiskIo, Op, SyncKind};

use super::{assert_bytes_eq, buf_of, create, pattern, read_up_to};
use crate::harness::{Cx, Outcome};
use crate::rng::{Rng, seed_from_env};

/// 1,000 tasks each write their own 4 KiB slot of one file (some with `writev`) and read it
/// back, all at once; then the whole file is checked.
pub async fn concurrent_ops_one_file<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    const TASKS: u64 = 1000;
    let file = create(cx, "concurrent").await;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..TASKS {
        let disk = Arc::clone(&cx.disk);
        tasks.spawn(async move {
            let data = pattern(k, 4096);
            let offset = k * 4096;
            if k % 3 == 0 {
                let bufs = vec![buf_of(&*disk, &data[..1000]), buf_of(&*disk, &data[1000..])];
                let (res, _) = disk.writev_all_at(file, bufs, offset).await;
                res.expect("writev_all_at");
            } else {
                let (res, _) = disk.write_all_at(file, buf_of(&*disk, &data), offset).await;
                res.expect("write_all_at");
            }
            let (res, back) = disk
                .read_exact_at(file, disk.alloc(4096).expect("alloc"), offset)
                .await;
            res.expect("read_exact_at");
            assert_bytes_eq(&format!("slot {k} read back by its task"), &back, &data);
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let all = read_up_to(&*cx.disk, file, 0, (TASKS * 4096) as usize).await;
    assert_eq!(all.len(), (TASKS * 4096) as usize);
    for k in 0..TASKS as usize {
        assert_bytes_eq(
            &format!("slot {k}"),
            &all[k * 4096..(k + 1) * 4096],
            &pattern(k as u64, 4096),
        );
    }
    Outcome::Passed
}

/// Polls `fut` up to `polls` times (yielding in between), then drops it if it has not finished.
pub(crate) async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let step = std::future::poll_fn(|task| Poll::Ready(fut.as_mut().poll(task))).await;
        if let Poll::Ready(out) = step {
            return Some(out);
        }
        tokio::task::yield_now().await;
    }
    None
}

/// Waits until the backend reports no read or write in flight (dropped operations finish in
/// the background).
pub(crate) async fn quiesce<D: DiskIo>(disk: &D) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = disk.stats();
        let busy: u64 = [Op::Read, Op::Write, Op::Writev, Op::Sync]
            .iter()
            .map(|&op| stats.op(op).in_flight)
            .sum();
        if busy == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{busy} operations still in flight after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Writes and reads dropped at random moments leave the file consistent: each region written by
/// a completed write holds the new data; each region of a dropped write holds, sector by sector,
/// the old or the new data, nothing else. The backend keeps working afterwards.
pub async fn drop_in_flight_then_read_back<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    const REGIONS: u64 = 256;
    const REGION: usize = 8192;
    let seed = seed_from_env("DISKIO_SEED");
    let disk = &*cx.disk;
    let file = create(cx, "drop").await;
    let old: Vec<u8> = (0..REGIONS).flat_map(|r| pattern(r, REGION)).collect();
    let (res, _) = disk.write_all_at(file, buf_of(disk, &old), 0).await;
    res.expect("initial write");
    disk.fsync(file, SyncKind::Data).await.expect("fsync");

    let mut rng = Rng::new(seed);
    let mut tasks = tokio::task::JoinSet::new();
    let mut completed = vec![false; REGIONS as usize];
    for r in 0..REGIONS {
        let disk = Arc::clone(&cx.disk);
        let polls = if rng.one_in(2) {
            usize::MAX
        } else {
            rng.below(4) as usize
        };
        let read_polls = rng.below(3) as usize;
        tasks.spawn(async move {
            let new = pattern(REGIONS + r, REGION);
            let offset = r * REGION as u64;
            let write = disk.write_all_at(file, buf_of(&*disk, &new), offset);
            let done = match poll_then_drop(write, polls).await {
                Some((res, _)) => {
                    res.expect("write that was awaited");
                    true
                }
                None => false,
            };
            let read = disk.read_at(file, disk.alloc(REGION).expect("alloc"), offset);
            let _ = poll_then_drop(read, read_polls).await;
            (r, done)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((r, done)) => completed[r as usize] = done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    quiesce(disk).await;

    let all = read_up_to(disk, file, 0, old.len()).await;
    assert_eq!(all.len(), old.len(), "file length (seed {seed})");
    for r in 0..REGIONS as usize {
        let got = &all[r * REGION..(r + 1) * REGION];
        let new = pattern(REGIONS + r as u64, REGION);
        if completed[r] {
            assert_bytes_eq(
                &format!("completed write to region {r} (seed {seed})"),
                got,
                &new,
            );
            continue;
        }
        for (s, sector) in got.chunks(512).enumerate() {
            let range = r * REGION + s * 512..r * REGION + (s + 1) * 512;
            let was = &old[range];
            let now = &new[s * 512..(s + 1) * 512];
            assert!(
                sector == was || sector == now,
                "region {r} sector {s} of a dropped write is neither old nor new data (seed {seed})"
            );
        }
    }
    // Still usable.
    let (res, back) = disk
        .read_at(file, disk.alloc(REGION).expect("alloc"), 0)
        .await;
    assert_eq!(res.expect("read after the drops"), REGION);
    assert_eq!(back.len(), REGION);
    Outcome::Passed
}

/// Operations whose futures are dropped are counted with the outcome they had, as the stats
/// docs promise: 64 writes of 4 KiB to their own regions, each dropped after its first poll (or
/// finished by it). Every write that reached the file (its region holds the new data) is
/// counted as a success with its bytes, whether or not its caller waited; a write counted as an
/// error is one that never ran. A backend whose clock lives in the caller's future counts a
/// dropped write that ran as an error (or not at all), and fails here.
pub async fn dropped_ops_are_counted<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    const OPS: u64 = 64;
    const LEN: usize = 4096;
    let disk = &*cx.disk;
    let file = create(cx, "dropcount").await;
    let old = pattern(0, LEN * OPS as usize);
    let (res, _) = disk.write_all_at(file, buf_of(disk, &old), 0).await;
    res.expect("initial write");
    quiesce(disk).await;
    let before = disk.stats().op(Op::Write);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..OPS {
        let disk = Arc::clone(&cx.disk);
        tasks.spawn(async move {
            let buf = buf_of(&*disk, &pattern(OPS + k, LEN));
            let write = disk.write_at(file, buf, k * LEN as u64);
            if let Some((res, _)) = poll_then_drop(write, 1).await {
                assert_eq!(res.expect("a write that finished at its first poll"), LEN);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    quiesce(disk).await;
    let after = disk.stats().op(Op::Write);
    let all = read_up_to(disk, file, 0, old.len()).await;
    let ran = (0..OPS as usize)
        .filter(|&k| all[k * LEN..(k + 1) * LEN] == pattern(OPS + k as u64, LEN)[..])
        .count() as u64;
    let counted = after.ops - before.ops;
    let failed = after.errors - before.errors;
    assert!(counted <= OPS, "{counted} writes counted of {OPS} issued");
    assert_eq!(
        counted - failed,
        ran,
        "writes counted as successes against writes that reached the file ({failed} counted \
         as errors)"
    );
    assert_eq!(
        after.bytes - before.bytes,
        ran * LEN as u64,
        "bytes of the writes that ran"
    );
    assert_eq!(after.in_flight, 0, "nothing left in flight");
    assert!(ran > 0, "no write ran: the scenario tested nothing");
    Outcome::Passed
}
