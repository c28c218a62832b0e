//! Real processes: a child process appends with `Sync` durability from 8 tasks and reports every
//! acknowledged LSN to its parent over a pipe; the parent `SIGKILL`s it at a random moment,
//! recovers the log, and checks that every acknowledged record is there, intact, in a contiguous
//! log. 50 kills per backend (`DISKIO_KILLS` for more); `DISKIO_SEED` replays the timing.
//!
//! The `power_cut_*` tests put the log on the power-cutting filesystem
//! (`conformance::powercut`) and cut the power after each kill: what the backend did not sync
//! is dropped, part of it kept and a write torn (seeded), before recovery. 100 kills and cuts
//! per backend and write mode (`DISKIO_CUTS` for more); a skip where FUSE is not available.
//!
//! Every 25 rounds the next child starts a fresh log: each check reads the whole log, so one
//! log for all rounds made the test's time grow with the square of the rounds.
//!
//! The child is this test binary itself, started again with `DISKIO_WAL_CHILD` set.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use conformance::Rng;
use conformance::harness::ScratchDir;
use conformance::powercut::{Cut, PowerCutFs};
use wal::{Wal, WalOptions};

const CHILD_ENV: &str = "DISKIO_WAL_CHILD";
const TASKS: u64 = 8;
/// Kills (and cuts) on one log before the next starts afresh.
const ROUNDS_PER_LOG: u64 = 25;

/// The options for `backend`; a backend name ending in `+direct` writes with `O_DIRECT`.
fn opts(backend: &str) -> WalOptions {
    // Small segments, so kills land during rotations too.
    WalOptions::new()
        .segment_bytes(256 << 10)
        .record_max(4 << 10)
        .direct_io(backend.ends_with("+direct"))
}

/// The record task `t` appends as its `k`th.
fn payload(t: u64, k: u64) -> Vec<u8> {
    let mut rng = Rng::new((t << 32) ^ k ^ 0x5151);
    let len = 50 + (rng.next_u64() % 400) as usize;
    let mut v = format!("{t}:{k}:").into_bytes();
    v.extend((0..len).map(|_| rng.next_u64() as u8));
    v
}

/// The child: appends until killed, printing `ACK <lsn> <task> <k>` once each append returns.
fn child(dir: &Path, backend: &str, first_k: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(disk) = common::backend(backend) else {
            return;
        };
        let (log, _) = Wal::open(disk, dir, opts(backend)).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for k in first_k.. {
                    let lsn = log.append(&payload(t, k)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {lsn} {t} {k}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// An acknowledged record: the task and number it was appended as, and its bytes (made once,
/// when the acknowledgement arrives).
struct Acked {
    t: u64,
    k: u64,
    data: Vec<u8>,
}

/// Recovers the log in `dir` and checks every acknowledged record.
fn check(dir: &Path, backend: &str, acked: &BTreeMap<u64, Acked>, round: u64) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let disk = common::backend(backend).unwrap();
        let (log, report) = Wal::open(disk, dir, opts(backend))
            .await
            .unwrap_or_else(|e| panic!("{backend}, kill {round}: recovery failed: {e}"));
        let mut reader = log.reader(1);
        let (mut lsn, mut found) = (0, 0);
        while let Some(rec) = reader.next().await.unwrap() {
            lsn += 1;
            assert_eq!(rec.lsn, lsn, "{backend}, kill {round}: contiguous");
            if let Some(Acked { t, k, data }) = acked.get(&lsn) {
                assert!(
                    rec.data == *data,
                    "{backend}, kill {round}: acknowledged LSN {lsn} (task {t}, #{k}) changed \
                     ({report:?})"
                );
                found += 1;
            }
        }
        if found < acked.len() {
            let (lost, Acked { t, k, .. }) = acked.range(lsn + 1..).next().unwrap();
            panic!(
                "{backend}, kill {round}: acknowledged LSN {lost} (task {t}, #{k}) lost: the log \
                 ends at {lsn} ({report:?})"
            );
        }
        log.close().await.unwrap();
        lsn
    })
}

/// `rounds` kills of a child appending on `backend`; with `cut`, on the power-cutting
/// filesystem, each kill followed by a power cut.
fn kills(backend: &str, cut: bool) {
    let (what, rounds) = if cut {
        (
            "kills and power cuts",
            common::env_count("DISKIO_CUTS", 100),
        )
    } else {
        ("kills", common::env_count("DISKIO_KILLS", 50))
    };
    let seed = conformance::seed_from_env("DISKIO_SEED");
    eprintln!("{backend}: {rounds} {what}, DISKIO_SEED={seed}");
    let Some(disk) = common::backend(backend) else {
        return;
    };
    // A backend whose durable write is one step (`RWF_DSYNC`) leaves nothing unsynced behind
    // an acknowledged group: a cut can only find unsynced data while a segment is prepared.
    let one_step = disk.capabilities().dsync_write;
    drop(disk);
    let mut rng = Rng::new(seed);
    let label = format!("wal-{}-{backend}", if cut { "cut" } else { "kill" });
    let scratch = ScratchDir::new(&label.replace('+', "-"));
    let fs = if cut {
        let at = scratch.path().join("mnt");
        std::fs::create_dir_all(&at).unwrap();
        match PowerCutFs::mount(&at) {
            Ok(fs) => Some(fs),
            Err(reason) => {
                conformance::harness::report_skip(&label, &reason);
                return;
            }
        }
    } else {
        None
    };
    let base = fs.as_ref().map_or(scratch.path(), PowerCutFs::path);
    if backend.ends_with("+direct") {
        if let Some(reason) = conformance::harness::direct_io_refused(base) {
            conformance::harness::report_skip(&label, &reason);
            return;
        }
    }
    let mut dir: PathBuf = base.join("log-0");
    let (mut torn, mut kept, mut dropped) = (0, 0, 0);
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<u64, Acked> = BTreeMap::new();
    let mut acked_total = 0;
    let mut first_k = 0;
    for round in 1..=rounds {
        if round % ROUNDS_PER_LOG == 0 {
            // A fresh log: every check reads the whole log, so one that only grew would make
            // the test's time grow with the square of its rounds.
            acked_total += acked.len();
            acked.clear();
            std::fs::remove_dir_all(&dir).unwrap();
            dir = base.join(format!("log-{}", round / ROUNDS_PER_LOG));
        }
        let mut child = Command::new(&exe)
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}|{backend}|{first_k}", dir.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ACK ") {
                    if lines.is_empty() {
                        let _ = tx.send(());
                    }
                    lines.push(line);
                }
            }
            lines
        });
        // Kill at a random moment once appends are flowing.
        let _ = rx.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        child.kill().unwrap(); // SIGKILL
        if let Some(fs) = &fs {
            // What the dead child's kernel threads still send must not land after the cut.
            fs.fence(child.id());
        }
        child.wait().unwrap();
        if let Some(fs) = &fs {
            let report = fs.power_cut(Cut::ragged(rng.next_u64()));
            torn += usize::from(report.torn);
            kept += report.kept;
            dropped += report.dropped;
        }
        let lines = reader.join().unwrap();
        for line in &lines {
            let f: Vec<u64> = line[4..]
                .split(' ')
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [lsn, t, k] = f[..] {
                let data = payload(t, k);
                let before = acked.insert(lsn, Acked { t, k, data });
                assert!(
                    before.is_none_or(|b| (b.t, b.k) == (t, k)),
                    "LSN {lsn} acknowledged twice for different records"
                );
            }
        }
        first_k += 1_000_000; // every child's records are new
        let recovered = check(&dir, backend, &acked, round);
        assert!(recovered >= acked.len() as u64);
    }
    acked_total += acked.len();
    eprintln!(
        "{backend}: {rounds} {what}, {acked_total} acknowledged records, all recovered intact"
    );
    if cut {
        eprintln!(
            "{backend}: the cuts dropped {dropped} unsynced changes, kept {kept}, tore {torn} writes"
        );
        if one_step {
            eprintln!(
                "{backend}: its durable writes are one step (RWF_DSYNC), so may drop nothing"
            );
        } else {
            assert!(
                dropped > 0,
                "the cuts dropped nothing: the test cut no unsynced data"
            );
        }
    }
    assert!(acked_total > 0, "the children acknowledged records");
}

/// Not a test on its own: the child process's body (does nothing unless started as a child).
#[test]
fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let dir = PathBuf::from(parts.next().unwrap());
    let backend = parts.next().unwrap().to_owned();
    let first_k = parts.next().unwrap().parse().unwrap();
    child(&dir, &backend, first_k);
}

#[test]
fn sigkill_loses_nothing_acknowledged_blocking() {
    kills("blocking", false);
}

#[test]
fn sigkill_loses_nothing_acknowledged_raw() {
    kills("raw", false);
}

#[test]
fn sigkill_loses_nothing_acknowledged_uring() {
    kills("uring", false);
}

#[test]
fn sigkill_loses_nothing_acknowledged_raw_direct_io() {
    kills("raw+direct", false);
}

#[test]
fn power_cut_loses_nothing_acknowledged_blocking() {
    kills("blocking", true);
}

#[test]
fn power_cut_loses_nothing_acknowledged_blocking_direct_io() {
    kills("blocking+direct", true);
}

#[test]
fn power_cut_loses_nothing_acknowledged_raw() {
    kills("raw", true);
}

#[test]
fn power_cut_loses_nothing_acknowledged_raw_linked_sync() {
    kills("raw+linked", true);
}

#[test]
fn power_cut_loses_nothing_acknowledged_raw_direct_io() {
    kills("raw+direct", true);
}

#[test]
fn power_cut_loses_nothing_acknowledged_uring() {
    kills("uring", true);
}

#[test]
fn power_cut_loses_nothing_acknowledged_uring_direct_io() {
    kills("uring+direct", true);
}
