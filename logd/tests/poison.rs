//! A failed sync under the API: logd's router on a real socket, its topics on a disk that fails
//! on command. The append the failure hits and every one after it is a 503 naming the cause,
//! never a 200; `/healthz` says which partition is poisoned; the other partitions, and reads of
//! what was durable, go on.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use std::sync::Arc;

use conformance::harness::ScratchDir;
use conformance::{FailingDisk, FaultMode, FaultPlan, FaultTarget};
use diskio::DynDiskIo;
use logd::http::{App, router};
use logd::topics::Topics;
use serde_json::{Value, json};
use wal::WalOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_partition_answers_503_naming_the_cause() {
    let scratch = ScratchDir::new("logd-poison");
    let failing = Arc::new(FailingDisk::passthrough(
        wal::DefaultDisk::with_defaults().unwrap(),
    ));
    let disk = Arc::clone(&failing) as Arc<dyn DynDiskIo>;
    let topics = Topics::open(scratch.path(), WalOptions::new(), disk)
        .await
        .unwrap();
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        topics: Arc::new(topics),
        record_max: 1 << 20,
        stopping,
        cluster: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(app)).await });

    let c = reqwest::Client::new();
    let r = c
        .put(format!("{base}/topics/t"))
        .json(&json!({"partitions": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let append = |p: usize, body: String| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            // A key of partition p (logd partitions by CRC32C of the key).
            let key = (0..)
                .map(|i| format!("k{i}"))
                .find(|k| crc32c::crc32c(k.as_bytes()) as usize % 2 == p)
                .unwrap();
            let r = c
                .post(format!("{base}/topics/t/records?key={key}"))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    for i in 0..5 {
        let (status, v) = append(0, format!("before-{i}")).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["partition"], 0);
    }

    // The next sync fails, and every one after it.
    failing.arm(FaultPlan::new(FaultTarget::Sync, 0).mode(FaultMode::FromThenOn));
    for i in 0..3 {
        let (status, v) = append(0, format!("after-{i}")).await;
        assert_eq!(status, 503, "{v}");
        let err = v["error"].as_str().unwrap();
        assert!(err.contains("poisoned"), "{err}");
    }
    assert!(failing.injected() >= 1);
    let r = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("topic \"t\" partition 0"), "{err}");

    // What was durable is still served.
    let text = c
        .get(format!("{base}/topics/t/partitions/0/records?from=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 5, "{text}");
    // Past the durable records, at most the stream's closing error line.
    assert!(
        lines.iter().skip(5).all(|v| v.get("error").is_some()),
        "{text}"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    for (i, v) in lines.iter().take(5).enumerate() {
        use base64::Engine;
        assert_eq!(
            b64.decode(v["data"].as_str().unwrap()).unwrap(),
            format!("before-{i}").into_bytes()
        );
    }
    // With the disk healthy again, a partition that never failed still takes appends.
    failing.disarm();
    let (status, v) = append(1, "other".to_owned()).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = append(0, "still".to_owned()).await;
    assert_eq!(status, 503, "a poisoned log stays poisoned until reopened");
}
