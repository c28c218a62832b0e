//! Clustered mode: three `logd` processes on loopback, talked to over HTTP. Topics and records
//! go through any node; every node serves the same records at the same LSNs; the leader is
//! killed with SIGKILL, the others go on, and the killed node catches up after its restart.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use common::Server;
use conformance::harness::ScratchDir;
use futures_util::StreamExt;
use serde_json::{Value, json};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Node {
    id: u64,
    http: String,
    server: Option<Server>,
    data: std::path::PathBuf,
}

fn start(data: &Path, http: &str, id: u64, peers: &str) -> Server {
    Server::start_at(
        data,
        http,
        // Snapshots every 40 entries: restarts start from one and apply the entries after it.
        &[
            "--node-id",
            &id.to_string(),
            "--peers",
            peers,
            "--snapshot-every",
            "40",
        ],
    )
}

async fn get_json(c: &reqwest::Client, url: &str) -> Option<Value> {
    let r = c.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The leader every running node agrees on (other than `not`), waiting up to 30 s.
async fn agreed_leader(c: &reqwest::Client, nodes: &[Node], not: Option<u64>) -> u64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for n in nodes.iter().filter(|n| n.server.is_some()) {
            let s = get_json(c, &format!("http://{}/cluster", n.http)).await;
            seen.push(s.and_then(|s| s["leader"].as_u64()));
        }
        if let Some(Some(l)) = seen.first()
            && seen.iter().all(|s| *s == Some(*l))
            && not != Some(*l)
        {
            return *l;
        }
        assert!(Instant::now() < until, "no agreed leader in 30 s: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of one partition on one node: (lsn, data).
async fn records(c: &reqwest::Client, http: &str, p: u64) -> Vec<(u64, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = format!("http://{http}/topics/t/partitions/{p}/records?from=1");
    let text = c.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v.get("error").is_none(), "stream error: {l}");
            let data = b64.decode(v["data"].as_str().unwrap()).unwrap();
            (v["lsn"].as_u64().unwrap(), String::from_utf8(data).unwrap())
        })
        .collect()
}

/// Appends `n` records named `{tag}-{i}` through the nodes in turn, 16 at a time (so the
/// leader proposes several per raft entry), retrying a 503 (no leader yet); every answer is a
/// 200. Adds the records to `acked` by partition: lsn → data.
async fn append(
    c: &reqwest::Client,
    nodes: &[Node],
    tag: &str,
    n: usize,
    acked: &mut BTreeMap<u64, BTreeMap<u64, String>>,
) {
    let live: Vec<&Node> = nodes.iter().filter(|n| n.server.is_some()).collect();
    let one = |i: usize| {
        let node = live[i % live.len()];
        let body = format!("{tag}-{i}");
        async move {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let r = c
                    .post(format!("http://{}/topics/t/records?key=k{i}", node.http))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let text = r.text().await.unwrap();
                if status == 200 {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let place = (v["partition"].as_u64().unwrap(), v["lsn"].as_u64().unwrap());
                    return (place, body);
                }
                assert_eq!(status, 503, "node {}: {text}", node.id);
                assert!(Instant::now() < until, "still 503 after 30 s: {text}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let answers: Vec<((u64, u64), String)> = futures_util::stream::iter(0..n)
        .map(one)
        .buffer_unordered(16)
        .collect()
        .await;
    for ((p, lsn), body) in answers {
        let old = acked.entry(p).or_default().insert(lsn, body.clone());
        assert!(old.is_none(), "{body} answered with the place of {old:?}");
    }
}

/// Waits until every running node serves exactly `acked` (and so each other's records).
async fn converged(
    c: &reqwest::Client,
    nodes: &[Node],
    acked: &BTreeMap<u64, BTreeMap<u64, String>>,
) {
    for n in nodes.iter().filter(|n| n.server.is_some()) {
        for p in 0..4 {
            let want: Vec<(u64, String)> = acked
                .get(&p)
                .map(|m| m.iter().map(|(l, d)| (*l, d.clone())).collect())
                .unwrap_or_default();
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let got = records(c, &n.http, p).await;
                if got == want {
                    break;
                }
                assert!(
                    Instant::now() < until && got.len() <= want.len() && want.starts_with(&got),
                    "node {} partition {p}: got {got:?}, want {want:?}",
                    n.id
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[test]
fn three_nodes_replicate_topics_and_survive_the_leaders_sigkill() {
    let scratch = ScratchDir::new("logd-cluster");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let raft: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let peers = (1..=3)
        .map(|id| format!("{id}={}", raft[id - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (1..=3u64)
        .map(|id| {
            let data = scratch.path().join(format!("n{id}"));
            let http = free_addr();
            Node {
                id,
                server: Some(start(&data, &http, id, &peers)),
                http,
                data,
            }
        })
        .collect();
    let c = reqwest::Client::new();
    rt.block_on(async {
        let leader = agreed_leader(&c, &nodes, None).await;
        let follower = nodes.iter().find(|n| n.id != leader).unwrap();

        // A topic created through a follower exists everywhere; the API's errors hold.
        let put = |n: &Node, body: Value| {
            let url = format!("http://{}/topics/t", n.http);
            let c = c.clone();
            async move {
                c.put(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(put(follower, json!({"partitions": 4})).await, 201);
        assert_eq!(put(&nodes[0], json!({"partitions": 4})).await, 200);
        assert_eq!(put(&nodes[1], json!({"partitions": 3})).await, 409);
        assert_eq!(put(&nodes[2], json!({"partitions": 0})).await, 400);
        let r = c
            .post(format!("http://{}/topics/nope/records", nodes[2].http))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        // Records through every node, served alike by every node.
        let mut acked = BTreeMap::new();
        append(&c, &nodes, "a", 120, &mut acked).await;
        converged(&c, &nodes, &acked).await;

        // The leader dies; the two others elect one and go on.
        let li = nodes.iter().position(|n| n.id == leader).unwrap();
        nodes[li].server.as_mut().unwrap().kill();
        nodes[li].server = None;
        let new_leader = agreed_leader(&c, &nodes, Some(leader)).await;
        assert_ne!(new_leader, leader);
        append(&c, &nodes, "b", 120, &mut acked).await;
        converged(&c, &nodes, &acked).await;

        // Back, it catches up from its own log and its peers'; then takes writes too.
        nodes[li].server = Some(start(
            &nodes[li].data,
            &nodes[li].http,
            nodes[li].id,
            &peers,
        ));
        converged(&c, &nodes, &acked).await;
        append(&c, &nodes, "c", 60, &mut acked).await;
        converged(&c, &nodes, &acked).await;
        let total: usize = acked.values().map(BTreeMap::len).sum();
        assert_eq!(total, 300);
    });

    // 300 appends made snapshots on every node (each restart above started from one).
    for n in &nodes {
        assert!(n.data.join("sm/snapshot").exists(), "node {}", n.id);
    }

    // A node's data directory is not a single node's, nor another node's.
    let mut n1 = nodes.remove(0);
    n1.server.as_mut().unwrap().terminate();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logd"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(&n1.data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to clustered node 1"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "2",
            "--peers",
            &peers,
            "--data",
        ])
        .arg(&n1.data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to node 1, not node 2"), "{err}");
}
