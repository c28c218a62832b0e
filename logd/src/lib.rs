//! # logd
//!
//! The WAL as a service: topics of partitioned, ordered, replayable logs over HTTP, each append
//! answered once durable. `cargo run --release -p logd` serves on `127.0.0.1:7000` with its data
//! in `./logd-data`; see the README's "Run the service" for the API with `curl`.
//!
//! - `PUT /topics/{topic}` with `{"partitions": N}`: creates a topic (201), a no-op if it
//!   exists with N partitions (200), a 409 with another N.
//! - `POST /topics/{topic}/records?key=K` with the record as the body: `{"partition": P,
//!   "lsn": L}` once durable. The key picks the partition (CRC32C of the key modulo N); without
//!   one, partitions take turns.
//! - `GET /topics/{topic}/partitions/{p}/records?from=L&follow=true&limit=N`: the records from
//!   LSN `L` on as NDJSON, `{"lsn": .., "data": "<base64>"}` per line; `follow` keeps the
//!   stream open and sends each record once durable; `limit` stops after N.
//! - `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! Errors are JSON `{"error": "..."}`: 400 for a malformed body, LSN, partition or parameter;
//! 404 for an unknown topic or partition; 409 as above; 410 for an LSN removed by retention;
//! 413 above the record size limit; 503 naming the cause once a partition's log is poisoned (a
//! failed write or sync) or while the server stops. SIGTERM or Ctrl-C stops accepting, lets
//! the requests in flight finish, ends following streams, closes the logs and exits 0.
//! `/healthz` answers `ok`, or 503 naming each poisoned partition.
//!
//! ## Clustered mode
//!
//! `--node-id N --peers 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT` runs the node as one of a raft
//! cluster ([`cluster`]): topics and appends go through openraft, its log on the WAL
//! (`wal_raft::LogStore`), and every node applies them to its own partitions, so every node
//! serves the same records at the same LSNs. Any node takes requests (a follower forwards
//! changes to the leader); an append is answered once its entry is durable on a majority and
//! applied on the node that proposed it. `GET /cluster` gives the node's view (its id, the
//! leader, the term, the last applied entry). The one-node default starts none of it.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod http;
pub mod metrics;
pub mod topics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use wal::WalOptions;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the topics.
    pub data: PathBuf,
    /// The largest record accepted, in bytes.
    pub record_max: usize,
    /// Clustered mode: this node's id and its peers; `None` runs one node.
    pub cluster: Option<cluster::ClusterConfig>,
}

/// Serves until `stop` resolves, then closes the logs.
///
/// # Errors
///
/// Opening the topics or binding the address fails; closing the logs fails.
pub async fn run(
    config: Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let disk = topics::Disk::with_defaults()?;
    let (topics, cluster) = match &config.cluster {
        None => {
            if let Some(n) = cluster::marked(&config.data)? {
                return Err(format!(
                    "{} belongs to clustered node {n}: start it with --node-id {n} and --peers",
                    config.data.display()
                )
                .into());
            }
            let opts = WalOptions::new().record_max(config.record_max);
            let topics = topics::Topics::open(&config.data, opts, disk).await?;
            (Arc::new(topics), None)
        }
        Some(c) => {
            let opts = cluster::partition_options(config.record_max);
            let dir = cluster::topics_dir(&config.data);
            cluster::claim(&config.data, c.node_id)?;
            let topics = Arc::new(topics::Topics::open(&dir, opts, disk).await?);
            let node = cluster::Cluster::start(c, &config.data, Arc::clone(&topics)).await?;
            (topics, Some(node))
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let (stopping_tx, stopping) = watch::channel(false);
    let app = Arc::new(http::App {
        topics,
        record_max: config.record_max,
        stopping,
        cluster,
    });
    tracing::info!(listen = %listener.local_addr()?, data = %config.data.display(), "logd serving");
    eprintln!(
        "logd: serving on http://{} with data in {}",
        listener.local_addr()?,
        config.data.display()
    );
    let shutdown = async move {
        stop.await;
        tracing::info!("logd stopping: no new connections; finishing what was accepted");
        let _ = stopping_tx.send(true);
    };
    axum::serve(listener, http::router(Arc::clone(&app)))
        .with_graceful_shutdown(shutdown)
        .await?;
    if let Some(c) = &app.cluster {
        c.shutdown().await;
    }
    app.topics.close().await?;
    eprintln!("logd: stopped, logs closed");
    Ok(())
}
