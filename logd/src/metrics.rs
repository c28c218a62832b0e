//! `GET /metrics`: the logs' counters in Prometheus' text format, per topic and partition.

use std::fmt::Write;
use std::sync::Arc;

use crate::topics::Topic;

/// The text of `/metrics` for `topics`.
pub fn render<D: diskio::DiskIo>(topics: &[Arc<Topic<D>>]) -> String {
    let mut rows = Vec::new();
    for t in topics {
        for p in 0..t.log.len() {
            if let Some(log) = t.log.partition(p) {
                rows.push((
                    t.name.clone(),
                    p,
                    log.stats(),
                    log.next_lsn(),
                    log.durable_end(),
                ));
            }
        }
    }
    let mut out = String::new();
    let counter =
        |out: &mut String, name: &str, help: &str, get: &dyn Fn(&wal::WalStats) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (t, p, s, _, _) in &rows {
                let _ = writeln!(out, "{name}{{topic=\"{t}\",partition=\"{p}\"}} {}", get(s));
            }
        };
    counter(&mut out, "logd_appends_total", "Records appended.", &|s| {
        s.appends
    });
    counter(
        &mut out,
        "logd_groups_total",
        "Group commits written.",
        &|s| s.groups,
    );
    counter(
        &mut out,
        "logd_written_bytes_total",
        "Bytes written to the log files.",
        &|s| s.bytes_written,
    );
    counter(
        &mut out,
        "logd_syncs_total",
        "Syncs of the log files.",
        &|s| s.syncs,
    );
    let _ = writeln!(
        out,
        "# HELP logd_next_lsn The LSN the next record gets.\n# TYPE logd_next_lsn gauge"
    );
    for (t, p, _, next, _) in &rows {
        let _ = writeln!(
            out,
            "logd_next_lsn{{topic=\"{t}\",partition=\"{p}\"}} {next}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP logd_durable_end Every record below this LSN is durable.\n# TYPE logd_durable_end gauge"
    );
    for (t, p, _, _, durable) in &rows {
        let _ = writeln!(
            out,
            "logd_durable_end{{topic=\"{t}\",partition=\"{p}\"}} {durable}"
        );
    }
    let name = "logd_sync_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency of the log's syncs since the server started.\n# TYPE {name} summary"
    );
    for (t, p, s, _, _) in &rows {
        let l = format!("topic=\"{t}\",partition=\"{p}\"");
        let q = &s.sync_us;
        let _ = writeln!(out, "{name}{{{l},quantile=\"0.5\"}} {}", q.p50 / 1e6);
        let _ = writeln!(out, "{name}{{{l},quantile=\"0.99\"}} {}", q.p99 / 1e6);
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", q.mean * q.count as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{l}}} {}", q.count);
    }
    out
}
