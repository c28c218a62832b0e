//! The HTTP API against the real binary, with a real HTTP client: every endpoint, every error,
//! a follower that receives records appended after it connected, and a clean stop on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::time::Duration;

use base64::Engine;
use common::Server;
use conformance::harness::ScratchDir;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn lines(resp: reqwest::Response) -> Vec<Value> {
    let text = resp.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn decode(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str().unwrap())
        .unwrap()
}

#[test]
fn every_endpoint_and_every_error() {
    let scratch = ScratchDir::new("logd-api");
    let srv = Server::start(&scratch.path().join("data"), &["--record-max", "1000"]);
    rt().block_on(async {
        let c = reqwest::Client::new();
        // Topics: created, again (no-op), another count (409), bad input (400).
        let r = c
            .put(srv.url("/topics/orders"))
            .json(&json!({"partitions": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = c
            .put(srv.url("/topics/orders"))
            .json(&json!({"partitions": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = c
            .put(srv.url("/topics/orders"))
            .json(&json!({"partitions": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert!(
            r.json::<Value>().await.unwrap()["error"]
                .as_str()
                .unwrap()
                .contains("exists with 3 partitions")
        );
        for (path, body) in [
            ("/topics/orders", "not json"),
            ("/topics/orders", r#"{"partitions": 0}"#),
            ("/topics/bad%20name", r#"{"partitions": 1}"#),
        ] {
            let r = c.put(srv.url(path)).body(body).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path} {body}");
            assert!(r.json::<Value>().await.unwrap()["error"].is_string());
        }

        // Appends: a key always lands in one partition, in order; no key takes turns.
        let mut alice = Vec::new();
        for i in 0..5 {
            let r = c
                .post(srv.url("/topics/orders/records?key=alice"))
                .body(format!("alice {i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let v: Value = r.json().await.unwrap();
            alice.push((v["partition"].as_u64().unwrap(), v["lsn"].as_u64().unwrap()));
        }
        assert!(
            alice
                .windows(2)
                .all(|w| w[0].0 == w[1].0 && w[0].1 + 1 == w[1].1),
            "{alice:?}"
        );
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..3 {
            let v: Value = c
                .post(srv.url("/topics/orders/records"))
                .body(format!("rr {i}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            seen.insert(v["partition"].as_u64().unwrap());
        }
        assert_eq!(seen.len(), 3, "round-robin visits every partition");

        // Reads: from an LSN, with a limit, as NDJSON with base64 data.
        let (p, first) = alice[0];
        let got = lines(
            c.get(srv.url(&format!(
                "/topics/orders/partitions/{p}/records?from={first}"
            )))
            .send()
            .await
            .unwrap(),
        )
        .await;
        let alices: Vec<Vec<u8>> = got
            .iter()
            .map(decode)
            .filter(|d| d.starts_with(b"alice"))
            .collect();
        assert_eq!(
            alices,
            (0..5)
                .map(|i| format!("alice {i}").into_bytes())
                .collect::<Vec<_>>()
        );
        let got = lines(
            c.get(srv.url(&format!(
                "/topics/orders/partitions/{p}/records?from={}&limit=2",
                first + 1
            )))
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["lsn"].as_u64(), Some(first + 1));

        // Errors: 404 topic, 404 partition, 400 partition/LSN/flag, 413 record.
        for (path, status) in [
            ("/topics/nope/partitions/0/records", StatusCode::NOT_FOUND),
            ("/topics/orders/partitions/3/records", StatusCode::NOT_FOUND),
            (
                "/topics/orders/partitions/x/records",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/topics/orders/partitions/0/records?from=abc",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/topics/orders/partitions/0/records?from=0",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/topics/orders/partitions/0/records?follow=maybe",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/topics/orders/partitions/0/records?limit=-1",
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let r = c.get(srv.url(path)).send().await.unwrap();
            assert_eq!(r.status(), status, "{path}");
            assert!(
                r.json::<Value>().await.unwrap()["error"].is_string(),
                "{path}"
            );
        }
        let r = c
            .post(srv.url("/topics/nope/records"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c
            .post(srv.url("/topics/orders/records"))
            .body(vec![0u8; 1001])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            r.json::<Value>().await.unwrap()["error"]
                .as_str()
                .unwrap()
                .contains("at most 1000 bytes")
        );
        // The refused record was not appended: the partition's records are as before.
        let all: usize = {
            let mut n = 0;
            for p in 0..3 {
                n += lines(
                    c.get(srv.url(&format!("/topics/orders/partitions/{p}/records")))
                        .send()
                        .await
                        .unwrap(),
                )
                .await
                .len();
            }
            n
        };
        assert_eq!(all, 8);

        // Metrics and health.
        let m = c
            .get(srv.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            m.contains(&format!(
                "logd_appends_total{{topic=\"orders\",partition=\"{p}\"}} "
            )),
            "{m}"
        );
        assert!(
            m.contains("logd_sync_latency_seconds{topic=\"orders\""),
            "{m}"
        );
        let appends: u64 = m
            .lines()
            .filter(|l| l.starts_with("logd_appends_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(appends, 8);
        assert_eq!(
            c.get(srv.url("/healthz")).send().await.unwrap().status(),
            StatusCode::OK
        );
    });
}

#[test]
fn a_follower_receives_records_appended_after_it_connected_and_sigterm_ends_it_cleanly() {
    let scratch = ScratchDir::new("logd-follow");
    let mut srv = Server::start(&scratch.path().join("data"), &[]);
    rt().block_on(async {
        let c = reqwest::Client::new();
        c.put(srv.url("/topics/t"))
            .json(&json!({"partitions": 1}))
            .send()
            .await
            .unwrap();
        c.post(srv.url("/topics/t/records"))
            .body("before")
            .send()
            .await
            .unwrap();
        let resp = c
            .get(srv.url("/topics/t/partitions/0/records?from=1&follow=true"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let writer = {
            let (c, url) = (c.clone(), srv.url("/topics/t/records"));
            tokio::spawn(async move {
                for i in 0..20 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let r = c
                        .post(&url)
                        .body(format!("after {i}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::OK);
                }
            })
        };
        while got.len() < 21 {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("the follower gets each record")
                .expect("the stream stays open")
                .unwrap();
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                got.push(serde_json::from_slice::<Value>(&line).unwrap());
            }
        }
        writer.await.unwrap();
        assert_eq!(decode(&got[0]), b"before");
        for (i, v) in got[1..].iter().enumerate() {
            assert_eq!(v["lsn"].as_u64(), Some(i as u64 + 2));
            assert_eq!(decode(v), format!("after {i}").into_bytes());
        }
        // SIGTERM with the follower still connected: its stream ends, the server exits 0.
        let status = tokio::task::spawn_blocking(move || srv.terminate())
            .await
            .unwrap();
        assert!(status.success(), "logd exited with {status}");
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = body.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the following stream ended with the server");
    });
    // Everything acknowledged is there after a restart.
    let srv = Server::start(&scratch.path().join("data"), &[]);
    rt().block_on(async {
        let got = lines(
            reqwest::get(srv.url("/topics/t/partitions/0/records"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got.len(), 21);
    });
}
