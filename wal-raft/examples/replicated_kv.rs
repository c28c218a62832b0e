//! Three raft nodes in one process, each with its log on diskio's WAL, replicating a key-value
//! map over loopback TCP.
//!
//! ```text
//! cargo run -p wal-raft --example replicated_kv
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft};
use wal::WalOptions;
use wal_raft::LogStore;
use wal_raft::kv::{Client, serve};
use wal_raft::kv::{KvConfig, KvStateMachine, Request};
use wal_raft::net::Network;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::temp_dir().join(format!("wal-raft-example-{}", std::process::id()));
    let config = Arc::new(Config::default().validate()?);
    let mut members = BTreeMap::new();
    let mut listeners = Vec::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        members.insert(id, BasicNode::new(listener.local_addr()?.to_string()));
        listeners.push((id, listener));
    }
    let mut rafts = Vec::new();
    for (id, listener) in listeners {
        // The log store: raft entries as WAL records, group-committed; the vote beside them.
        let disk = wal::DefaultDisk::with_defaults()?;
        let store: LogStore<KvConfig, _> =
            LogStore::open(disk, base.join(format!("n{id}/raft")), WalOptions::new()).await?;
        // The state machine: a map, its snapshots kept on disk.
        let sm = KvStateMachine::open(base.join(format!("n{id}/sm")))?;
        let raft = Raft::new(
            id,
            Arc::clone(&config),
            Network::default(),
            store,
            sm.clone(),
        )
        .await?;
        tokio::spawn(serve(listener, raft.clone(), sm.clone()));
        rafts.push((raft, sm));
    }
    rafts[0].0.initialize(members.clone()).await?;

    // A client writes through whichever node leads.
    let addrs = members
        .iter()
        .map(|(&id, n)| (id, n.addr.clone()))
        .collect();
    let mut client = Client::new(&addrs);
    for i in 0..100 {
        let index = client
            .write(Request::Set {
                key: format!("key-{i}"),
                value: format!("value {i}").into_bytes(),
            })
            .await?;
        if i % 25 == 0 {
            println!("key-{i} committed at log index {index}");
        }
    }
    let read = client.read("key-99").await?;
    println!(
        "linearizable read of key-99: {:?}",
        read.map(String::from_utf8)
    );

    // Every node applies the same entries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (raft, sm) in &rafts {
        let id = raft.metrics().borrow().id;
        println!(
            "node {id}: {} keys, last applied {:?}",
            sm.len(),
            sm.last_applied()
        );
        raft.shutdown().await.map_err(|e| e.to_string())?;
    }
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
