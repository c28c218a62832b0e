//! Three `raft-kv` processes on loopback, each its log on diskio's WAL: clients write through
//! the leader, the leader is killed with SIGKILL under load, a new one is elected, every write
//! acknowledged to a client is read back from the cluster, and the killed node, restarted on
//! its own directory, catches up and holds every one of them. Snapshots are taken every 300
//! entries, so the nodes purge their logs under load and the restarted one starts from its own
//! snapshot file and log, or from the leader's snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use conformance::harness::ScratchDir;
use wal_raft::kv::Client;
use wal_raft::kv::Request;

struct Node {
    id: u64,
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, peers: &BTreeMap<u64, String>, init: bool) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_raft-kv"));
        cmd.arg("--id")
            .arg(self.id.to_string())
            .arg("--listen")
            .arg(&self.addr)
            .arg("--dir")
            .arg(&self.dir)
            .args(["--snapshot-every", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (id, addr) in peers {
            cmd.arg("--peer").arg(format!("{id}={addr}"));
        }
        if init {
            cmd.arg("--init");
        }
        self.child = Some(cmd.spawn().expect("start raft-kv"));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn leader(client: &mut Client, ids: &[u64], deadline: Duration) -> u64 {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        for &id in ids {
            if let Ok(s) = client.status(id).await {
                if let Some(l) = s.leader.filter(|l| ids.contains(l)) {
                    if client.status(l).await.is_ok_and(|ls| ls.leader == Some(l)) {
                        return l;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader among {ids:?} within {deadline:?}");
}

fn value(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

#[test]
fn a_killed_leader_loses_no_acknowledged_write_and_catches_up_after_restart() {
    let scratch = ScratchDir::new("raft-cluster");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(240), scenario(scratch.path()))
            .await
            .expect("the scenario finishes within 240 s");
    });
}

async fn scenario(base: &Path) {
    let peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut nodes: Vec<Node> = peers
        .iter()
        .map(|(&id, addr)| Node {
            id,
            addr: addr.clone(),
            dir: base.join(format!("n{id}")),
            child: None,
        })
        .collect();
    for n in &mut nodes {
        let init = n.id == 1;
        n.start(&peers, init);
    }
    let mut admin = Client::new(&peers);
    let first = leader(&mut admin, &[1, 2, 3], Duration::from_secs(30)).await;
    eprintln!("cluster: node {first} leads");

    // Writers: each its own client, keys of its own, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (peers, stop) = (peers.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut client = Client::new(&peers);
                let mut acked = Vec::new();
                let mut failed = 0u32;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    i += 1;
                    match client
                        .write(Request::Set {
                            key: key.clone(),
                            value: value(&key),
                        })
                        .await
                    {
                        Ok(_) => acked.push(key),
                        Err(e) => {
                            failed += 1;
                            eprintln!("cluster: writer {w}: {key} not acknowledged: {e}");
                        }
                    }
                }
                (acked, failed)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = leader(&mut admin, &[1, 2, 3], Duration::from_secs(10)).await;
    eprintln!("cluster: SIGKILL of the leader, node {victim}");
    nodes[(victim - 1) as usize].kill();
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != victim).collect();
    let second = leader(&mut admin, &survivors, Duration::from_secs(30)).await;
    eprintln!("cluster: node {second} leads after the kill");
    // Load under the new leader long enough for the survivors to snapshot and purge past what
    // the killed node holds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = 0;
    for w in writers {
        let (a, f) = w.await.unwrap();
        acked.extend(a);
        failed += f;
    }
    eprintln!("cluster: {} writes acknowledged, {failed} not", acked.len());
    assert!(
        acked.len() > 300,
        "the cluster took writes before and after the kill: {}",
        acked.len()
    );

    // Every acknowledged write is in the cluster, read linearizably through the leader.
    let mut reader = Client::new(&peers);
    for key in &acked {
        let got = reader
            .read(key)
            .await
            .unwrap_or_else(|e| panic!("reading {key}: {e}"));
        assert_eq!(
            got.as_deref(),
            Some(&value(key)[..]),
            "acknowledged write {key} lost"
        );
    }

    // The killed node restarts on its own directory and catches up.
    nodes[(victim - 1) as usize].start(&peers, false);
    let last = acked.last().unwrap().clone();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match reader.read_local(victim, &last).await {
            Ok(Some(v)) if v == value(&last) => break,
            _ if Instant::now() > until => panic!("node {victim} did not catch up within 60 s"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    for key in &acked {
        let got = reader.read_local(victim, key).await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some(&value(key)[..]),
            "restarted node {victim} lacks {key}"
        );
    }
    eprintln!(
        "cluster: node {victim} restarted and holds all {} acknowledged writes",
        acked.len()
    );
}
