//! `logd`: the WAL as an HTTP service (see the crate docs and `logd --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The WAL as a service: partitioned, ordered, replayable topics over HTTP; appends are
/// answered once durable.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Directory of the topics' logs (created if missing).
    #[arg(long, default_value = "./logd-data")]
    data: PathBuf,
    /// The largest record accepted, in bytes (larger ones get 413).
    #[arg(long, default_value_t = 1 << 20)]
    record_max: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logd: cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let config = logd::Config {
        listen: args.listen,
        data: args.data,
        record_max: args.record_max,
    };
    match rt.block_on(logd::run(config, stop_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("logd: cannot watch SIGTERM ({e}); Ctrl-C still stops the server");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
