//! The HTTP API: routes, handlers, and the mapping of errors onto status codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use serde::Deserialize;
use tokio::sync::watch;
use wal::WalError;

use crate::cluster::{self, Cluster, Command, Outcome};
use crate::metrics;
use crate::topics::{Disk, Topic, TopicError, Topics};
use diskio::DiskIo;

/// What every handler shares: the topics on the backend `D`.
pub struct App<D: DiskIo = Disk> {
    /// The topics.
    pub topics: Arc<Topics<D>>,
    /// The largest record accepted.
    pub record_max: usize,
    /// Turns true when the server stops: following readers end their streams.
    pub stopping: watch::Receiver<bool>,
    /// The raft node, in clustered mode.
    pub cluster: Option<Arc<Cluster>>,
}

impl<D: DiskIo> App<D> {
    /// Bytes in front of each stored record that are not the client's.
    fn prefix(&self) -> usize {
        if self.cluster.is_some() {
            cluster::PREFIX
        } else {
            0
        }
    }
}

/// The router of the API.
pub fn router<D: DiskIo + Clone>(app: Arc<App<D>>) -> Router {
    let limit = app.record_max;
    Router::new()
        .route("/topics/{topic}", put(create_topic::<D>))
        .route(
            "/topics/{topic}/records",
            post(append::<D>).layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/topics/{topic}/partitions/{partition}/records",
            get(read::<D>),
        )
        .route("/metrics", get(metrics_text::<D>))
        .route("/healthz", get(healthz::<D>))
        .route("/cluster", get(cluster_status::<D>))
        .with_state(app)
}

/// An error answer: a status and a JSON body `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 }).to_string();
        (
            self.0,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

impl From<WalError> for ApiError {
    fn from(e: WalError) -> Self {
        let status = match &e {
            WalError::RecordTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WalError::Poisoned { .. } | WalError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            WalError::Truncated { .. } => StatusCode::GONE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<TopicError> for ApiError {
    fn from(e: TopicError) -> Self {
        let status = match &e {
            TopicError::BadName(_) | TopicError::BadPartitions { .. } => StatusCode::BAD_REQUEST,
            TopicError::Conflict { .. } => StatusCode::CONFLICT,
            TopicError::Wal(w) => return ApiError::from(w.clone()),
            TopicError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

async fn topic<D: DiskIo + Clone>(app: &App<D>, name: &str) -> Result<Arc<Topic<D>>, ApiError> {
    app.topics
        .get(name)
        .await
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no topic {name:?}")))
}

#[derive(Deserialize)]
struct CreateBody {
    partitions: usize,
}

async fn create_topic<D: DiskIo + Clone>(
    State(app): State<Arc<App<D>>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateBody = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body must be JSON like {{\"partitions\": 4}}: {e}"
        ))
    })?;
    let created = match &app.cluster {
        None => app.topics.create(&name, req.partitions).await?,
        Some(c) => {
            crate::topics::check(&name, req.partitions)?;
            let cmd = Command::CreateTopic {
                name: name.clone(),
                partitions: req.partitions,
            };
            match replicate(c, cmd).await? {
                Outcome::Created(created) => created,
                other => return Err(unexpected(&other)),
            }
        }
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body =
        serde_json::json!({ "topic": name, "partitions": req.partitions, "created": created });
    Ok((status, axum::Json(body)).into_response())
}

async fn append<D: DiskIo + Clone>(
    State(app): State<Arc<App<D>>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a record may have at most {} bytes", app.record_max),
            )
        } else {
            ApiError(e.status(), e.body_text())
        }
    })?;
    let topic = topic(&app, &name).await?;
    if body.len() > app.record_max {
        return Err(WalError::RecordTooLarge {
            len: body.len(),
            max: app.record_max,
        }
        .into());
    }
    let p = topic.route(q.get("key").map(|k| k.as_bytes()));
    let Some(log) = topic.log.partition(p) else {
        return Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("partition {p} missing"),
        ));
    };
    let lsn = match &app.cluster {
        None => log.append(&body).await?,
        Some(c) => {
            let cmd = Command::Append {
                topic: name,
                partition: p,
                data: body.to_vec(),
            };
            match replicate(c, cmd).await? {
                Outcome::Appended { lsn, .. } => lsn,
                other => return Err(unexpected(&other)),
            }
        }
    };
    Ok(axum::Json(serde_json::json!({ "partition": p, "lsn": lsn })).into_response())
}

/// Replicates `cmd`; the outcome, or the refusal as an error answer.
async fn replicate(c: &Cluster, cmd: Command) -> Result<Outcome, ApiError> {
    match c.write(cmd).await {
        Ok(Outcome::Failed { status, error }) => Err(ApiError(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error,
        )),
        Ok(outcome) => Ok(outcome),
        Err(e) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

fn unexpected(outcome: &Outcome) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected outcome {outcome:?}"),
    )
}

async fn cluster_status<D: DiskIo + Clone>(
    State(app): State<Arc<App<D>>>,
) -> Result<Response, ApiError> {
    let Some(c) = &app.cluster else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this node runs alone (no --node-id)".to_owned(),
        ));
    };
    let s = c.status();
    let body = serde_json::json!({
        "id": s.id,
        "leader": s.leader,
        "term": s.term,
        "last_applied": s.last_applied,
        "peers": c.peers(),
    });
    Ok(axum::Json(body).into_response())
}

/// A query parameter parsed, or a 400 naming it.
fn param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{name} must be {what}, not {v:?}"))),
    }
}

async fn read<D: DiskIo + Clone>(
    State(app): State<Arc<App<D>>>,
    Path((name, partition)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let topic = topic(&app, &name).await?;
    let p: usize = partition
        .parse()
        .map_err(|_| bad(format!("the partition must be a number, not {partition:?}")))?;
    let Some(log) = topic.log.partition(p) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "topic {name:?} has partitions 0..{}, not {p}",
                topic.log.len()
            ),
        ));
    };
    let first = log.first_lsn();
    let from: u64 = param(&q, "from", "an LSN (a positive integer)")?.unwrap_or(first);
    if from == 0 {
        return Err(bad("from must be an LSN (a positive integer), not 0"));
    }
    let follow: bool = param(&q, "follow", "true or false")?.unwrap_or(false);
    let limit: Option<u64> = param(&q, "limit", "a count (a non-negative integer)")?;
    if from < first {
        return Err(WalError::Truncated { lsn: from, first }.into());
    }
    let reader = log.reader(from);
    let stream = futures_util::stream::unfold(
        Follow {
            reader,
            left: limit.unwrap_or(u64::MAX),
            follow,
            stopping: app.stopping.clone(),
            done: false,
            prefix: app.prefix(),
        },
        next_chunk,
    );
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// The state of one streamed read.
struct Follow<D: DiskIo> {
    reader: wal::Reader<D>,
    left: u64,
    follow: bool,
    stopping: watch::Receiver<bool>,
    done: bool,
    /// Bytes to skip in front of each stored record.
    prefix: usize,
}

/// Records per chunk of the response body, at most.
const CHUNK_RECORDS: usize = 256;

/// The next chunk of NDJSON lines: what is readable now, or (following) the next records once
/// they are durable; `None` at the end.
async fn next_chunk<D: DiskIo>(
    mut st: Follow<D>,
) -> Option<(Result<Bytes, std::io::Error>, Follow<D>)> {
    if st.done || st.left == 0 {
        return None;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    loop {
        let mut n = 0;
        while n < CHUNK_RECORDS && st.left > 0 {
            match st.reader.next().await {
                Ok(Some(rec)) => {
                    let data = rec.data.get(st.prefix..).unwrap_or_default();
                    let line = serde_json::json!({ "lsn": rec.lsn, "data": b64.encode(data) });
                    out.extend_from_slice(line.to_string().as_bytes());
                    out.push(b'\n');
                    st.left -= 1;
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    // The status is sent already: the stream ends with the error as its last line.
                    let line = serde_json::json!({ "error": e.to_string() });
                    out.extend_from_slice(line.to_string().as_bytes());
                    out.push(b'\n');
                    st.done = true;
                    return Some((Ok(Bytes::from(out)), st));
                }
            }
        }
        if !out.is_empty() {
            return Some((Ok(Bytes::from(out)), st));
        }
        if !st.follow || st.left == 0 || *st.stopping.borrow() {
            return None;
        }
        let mut stopping = st.stopping.clone();
        tokio::select! {
            waited = st.reader.wait() => {
                if waited.is_err() {
                    return None; // closed or poisoned: the stream ends
                }
            }
            _ = stopping.wait_for(|s| *s) => return None,
        }
    }
}

/// `ok`, or 503 naming every partition whose log is poisoned (it answers 503 to appends until
/// the server is restarted, which recovers what is durable).
async fn healthz<D: DiskIo + Clone>(
    State(app): State<Arc<App<D>>>,
) -> Result<&'static str, ApiError> {
    let mut sick = Vec::new();
    for t in app.topics.all().await {
        for p in 0..t.log.len() {
            if let Some(cause) = t.log.partition(p).and_then(wal::Wal::poisoned) {
                sick.push(format!("topic {:?} partition {p}: {cause}", t.name));
            }
        }
    }
    if sick.is_empty() {
        Ok("ok\n")
    } else {
        Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "poisoned by a failed write or sync (restart to recover): {}",
                sick.join("; ")
            ),
        ))
    }
}

async fn metrics_text<D: DiskIo + Clone>(State(app): State<Arc<App<D>>>) -> Response {
    let text = metrics::render(&app.topics.all().await);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}
