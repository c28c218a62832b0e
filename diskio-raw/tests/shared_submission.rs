//! Callers that queue an operation while another caller is submitting leave it to that caller,
//! which submits again before it stops (the reaper's next wait submits anything still queued).
//! Under many concurrent callers every read must complete with its bytes, and the callers, not
//! the reaper, must submit them: a caller that kept the submitter's role would leave every other
//! operation to the reaper.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use std::sync::Arc;
use std::time::Duration;

use diskio::{DiskIo, OpenOptions};
use diskio_raw::{RawDisk, RawOptions};

const BLOCK: usize = 4096;
const BLOCKS: u64 = 64;
const TASKS: u64 = 48;
const READS_PER_TASK: u64 = 300;

/// The byte stored at every position of block `b`.
fn fill(b: u64) -> u8 {
    (b % 251) as u8 + 1
}

#[test]
fn concurrent_callers_submit_every_operation_between_them() {
    let disk = match RawDisk::new(RawOptions::new()) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("SKIPPED shared submission: no io_uring here: {e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("diskio-raw-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f");
    let mut content = Vec::with_capacity(BLOCK * BLOCKS as usize);
    for b in 0..BLOCKS {
        content.extend(std::iter::repeat_n(fill(b), BLOCK));
    }
    std::fs::write(&path, &content).unwrap();

    // More workers than cores, so that callers often queue while another one is in the kernel.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let file = disk
            .open(&path, &OpenOptions::new().read(true))
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let disk = Arc::clone(&disk);
            tasks.spawn(async move {
                let mut buf = disk.alloc(BLOCK).unwrap();
                for i in 0..READS_PER_TASK {
                    let b = (t * 7 + i * 13) % BLOCKS;
                    let (res, back) = disk.read_at(file, buf, b * BLOCK as u64).await;
                    assert_eq!(res.unwrap(), BLOCK, "short read of block {b}");
                    assert!(back.iter().all(|&x| x == fill(b)), "block {b}: wrong bytes");
                    buf = back;
                }
            });
        }
        let all = async {
            while let Some(joined) = tasks.join_next().await {
                joined.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("reads did not complete within a minute");
        let stats = disk.ring_stats();
        assert!(
            stats.sqes >= TASKS * READS_PER_TASK / 2,
            "callers submitted {} SQEs for {} reads",
            stats.sqes,
            TASKS * READS_PER_TASK
        );
        eprintln!(
            "{} reads: {} SQEs in {} submitting enters ({:.2} per enter)",
            TASKS * READS_PER_TASK,
            stats.sqes,
            stats.enters,
            stats.sqes_per_enter()
        );
        disk.close(file).await.unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
