//! SIGKILL under load: concurrent appenders over HTTP, the server killed mid-load and restarted,
//! three times. Every record answered with 200 is read back at its partition and LSN with its
//! content, each client's records are in the order it sent them, and no record appears that no
//! client sent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use common::Server;
use conformance::harness::ScratchDir;
use serde_json::{Value, json};

const CLIENTS: usize = 16;

#[derive(Debug, Default, Clone)]
struct Sent {
    /// (i, partition, lsn) of every record answered with 200.
    acked: Vec<(u64, u64, u64)>,
    /// The highest i sent (answered or not).
    tried: Option<u64>,
}

#[test]
fn no_acknowledged_record_is_lost_or_invented_across_sigkills() {
    let scratch = ScratchDir::new("logd-kill");
    let data = scratch.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut sent: Vec<Sent> = vec![Sent::default(); CLIENTS];
    let mut srv = Server::start(&data, &[]);
    rt.block_on(async {
        let r = reqwest::Client::new()
            .put(srv.url("/topics/k"))
            .json(&json!({"partitions": 4}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    });
    for round in 0..3 {
        let base = srv.url("");
        let next: Vec<u64> = sent.iter().map(|s| s.tried.map_or(0, |t| t + 1)).collect();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|j| {
                let (base, start) = (base.clone(), next[j]);
                rt.spawn(async move {
                    let c = reqwest::Client::new();
                    let mut out = Sent::default();
                    for i in start.. {
                        out.tried = Some(i);
                        let r = c
                            .post(format!("{base}/topics/k/records?key=c{j}"))
                            .body(format!("c{j}-{i}"))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 200 => {
                                let v: Value = r.json().await.unwrap();
                                out.acked.push((
                                    i,
                                    v["partition"].as_u64().unwrap(),
                                    v["lsn"].as_u64().unwrap(),
                                ));
                            }
                            _ => break, // the server is gone
                        }
                    }
                    out
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        srv.kill();
        let results: Vec<Sent> = rt.block_on(async {
            let mut v = Vec::new();
            for t in tasks {
                v.push(t.await.unwrap());
            }
            v
        });
        for (s, r) in sent.iter_mut().zip(results) {
            s.acked.extend(r.acked);
            s.tried = r.tried.or(s.tried);
        }
        srv = Server::start(&data, &[]);
        let acked: usize = sent.iter().map(|s| s.acked.len()).sum();
        eprintln!("logd kill round {round}: {acked} records acknowledged so far; checking");
        check(&rt, &srv, &sent);
    }
}

fn check(rt: &tokio::runtime::Runtime, srv: &Server, sent: &[Sent]) {
    let b64 = base64::engine::general_purpose::STANDARD;
    // Every record of every partition, by (partition, lsn).
    let mut log: BTreeMap<(u64, u64), (usize, u64)> = BTreeMap::new();
    rt.block_on(async {
        for p in 0..4u64 {
            let text = reqwest::get(srv.url(&format!("/topics/k/partitions/{p}/records")))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert!(v.get("error").is_none(), "reading partition {p}: {v}");
                let data =
                    String::from_utf8(b64.decode(v["data"].as_str().unwrap()).unwrap()).unwrap();
                let (j, i) = data
                    .strip_prefix('c')
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(j, i)| Some((j.parse::<usize>().ok()?, i.parse::<u64>().ok()?)))
                    .unwrap_or_else(|| panic!("a record no client sent: {data:?}"));
                assert!(
                    j < sent.len() && sent[j].tried.is_some_and(|t| i <= t),
                    "a record no client sent: {data:?}"
                );
                log.insert((p, v["lsn"].as_u64().unwrap()), (j, i));
            }
        }
    });
    for (j, s) in sent.iter().enumerate() {
        for &(i, p, lsn) in &s.acked {
            assert_eq!(
                log.get(&(p, lsn)),
                Some(&(j, i)),
                "client {j}'s record {i} (acknowledged at {p}/{lsn}) is not there"
            );
        }
        // A client's records are in the order it sent them: its i grow with the LSN.
        let mine: Vec<u64> = log
            .values()
            .filter(|(c, _)| *c == j)
            .map(|(_, i)| *i)
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "client {j}'s records out of order: {mine:?}"
        );
    }
}
