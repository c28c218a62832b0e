//! `diskio-bench`: measures diskio backends against plain threads and `tokio::fs` on this
//! machine, in one run, and prints the figures with their ratios to the reference.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use benches::engines::{self, Engine};
use benches::report::Figures;
use benches::report::{self, EngineRuns, WorkloadResult};
use benches::wal_bench::{self, WalBackend, WalWorkload};
use benches::{Pattern, Workload, fio, plot, scratch};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use wal::Durability;

/// Compare diskio backends with plain `pread` threads and `tokio::fs` on your disk.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory for the scratch files (must be on the disk to measure; not tmpfs).
    #[arg(long, default_value = ".diskio-bench")]
    dir: PathBuf,
    /// Size of the file for O_DIRECT random reads, in MiB (larger than the device cache).
    #[arg(long, default_value_t = 1024)]
    direct_file_mib: u64,
    /// Size of the page-cached file, in MiB.
    #[arg(long, default_value_t = 256)]
    cached_file_mib: u64,
    /// Length of one measurement, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    duration_ms: u64,
    /// Runs per engine; the report gives medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A short smoke run: small files, 200 ms, one run.
    #[arg(long)]
    quick: bool,
    /// Only workloads whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Remove the scratch directory afterwards (by default it is kept for the next run).
    #[arg(long)]
    clean: bool,
    /// diskio-raw: how long a lone operation's caller polls for its completion, in µs.
    #[arg(long, default_value_t = 100)]
    raw_spin_us: u64,
    /// diskio-raw: how long a lone operation's caller then sleeps in the kernel for it, in µs.
    #[arg(long, default_value_t = 1000)]
    raw_lone_wait_us: u64,
    /// diskio-uring: how long an idle executor polls its queue, and a lone caller its answer,
    /// in µs.
    #[arg(long, default_value_t = 100)]
    uring_spin_us: u64,
    /// Do not run fio even when it is installed.
    #[arg(long)]
    no_fio: bool,
    /// Also write every figure (medians per workload and engine, replay rates) to this file as
    /// JSON, and beside it (the same name with `.svg`) a plot of the latency distributions of
    /// the durable WAL workloads.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.direct_file_mib = args.direct_file_mib.min(64);
        args.cached_file_mib = args.cached_file_mib.min(64);
        args.duration_ms = args.duration_ms.min(200);
        args.runs = 1;
    }
    if args.runs == 0 || args.duration_ms == 0 {
        eprintln!("error: --runs and --duration-ms must be at least 1");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workloads(args: &Args) -> Vec<(Workload, &'static str)> {
    let duration = Duration::from_millis(args.duration_ms);
    let direct_bytes = args.direct_file_mib << 20;
    let cached_bytes = args.cached_file_mib << 20;
    let w = |name, pattern, block, depth, direct, file_bytes| Workload {
        name,
        pattern,
        block,
        depth,
        direct,
        file_bytes,
        duration,
    };
    vec![
        (
            w(
                "4K random read, O_DIRECT, QD32",
                Pattern::RandomRead,
                4096,
                32,
                true,
                direct_bytes,
            ),
            "direct",
        ),
        (
            w(
                "4K random read, O_DIRECT, QD1",
                Pattern::RandomRead,
                4096,
                1,
                true,
                direct_bytes,
            ),
            "direct",
        ),
        (
            w(
                "4K random read, page cache, QD32",
                Pattern::RandomRead,
                4096,
                32,
                false,
                cached_bytes,
            ),
            "cached",
        ),
        (
            w(
                "4K random read, page cache, QD1",
                Pattern::RandomRead,
                4096,
                1,
                false,
                cached_bytes,
            ),
            "cached",
        ),
        (
            w(
                "1M sequential write, O_DIRECT, QD8",
                Pattern::SequentialWrite,
                1 << 20,
                8,
                true,
                direct_bytes,
            ),
            "write",
        ),
        (
            w(
                "4K write + fdatasync, QD1",
                Pattern::WriteSync,
                4096,
                1,
                false,
                64 << 20,
            ),
            "sync",
        ),
    ]
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let all = workloads(args);
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(w, _)| args.only.as_deref().is_none_or(|o| w.name.contains(o)))
        .collect();
    let wal_chosen: Vec<WalWorkload> =
        wal_bench::workloads(Duration::from_millis(args.duration_ms))
            .into_iter()
            .filter(|w| args.only.as_deref().is_none_or(|o| w.name.contains(o)))
            .collect();
    if chosen.is_empty() && wal_chosen.is_empty() {
        return Err("--only matched no workload".into());
    }
    let mut engines = vec![Engine::Threads];
    let mut fio_version = None;
    if args.no_fio {
        println!("fio: not run (--no-fio)");
    } else if let Some(version) = fio::version() {
        println!("fio: {version}, ioengine=io_uring, on the same scratch files");
        engines.push(Engine::Fio);
        fio_version = Some(version);
    } else {
        println!(
            "fio: not installed, so no fio column (install it to compare: apt-get install -y fio)"
        );
    }
    engines.extend([
        Engine::Raw,
        Engine::Uring,
        Engine::Blocking,
        Engine::TokioFs,
        Engine::TokioUring,
    ]);
    println!("diskio-bench: scratch files in {}", args.dir.display());
    let mut files = std::collections::HashMap::new();
    for (w, kind) in &chosen {
        if files.contains_key(kind) {
            continue;
        }
        println!("preparing the {kind} file ({} MiB)...", w.file_bytes >> 20);
        let path =
            scratch::ensure_file(&args.dir, &format!("{kind}.dat"), w.file_bytes).map_err(|e| {
                format!(
                    "cannot prepare the scratch file in {}: {e}",
                    args.dir.display()
                )
            })?;
        files.insert(*kind, path);
    }
    if let Some(p) = files.get("cached") {
        scratch::warm(p).map_err(|e| format!("warming {}: {e}", p.display()))?;
    }

    let backends = engines::BackendOptions {
        raw: diskio_raw::RawOptions::new()
            .spin(Duration::from_micros(args.raw_spin_us))
            .lone_wait(Duration::from_micros(args.raw_lone_wait_us)),
        uring: diskio_uring::UringOptions::new().spin(Duration::from_micros(args.uring_spin_us)),
    };
    let total = (chosen.len() * engines.len() * args.runs) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results = Vec::new();
    for (w, kind) in &chosen {
        let path = &files[kind];
        let mut per_engine: Vec<EngineRuns> = engines
            .iter()
            .map(|&engine| EngineRuns {
                engine,
                runs: Ok(Vec::new()),
            })
            .collect();
        for run in 0..args.runs {
            // Alternate the order so no engine always runs right after the same other one.
            let mut order: Vec<usize> = (0..engines.len()).collect();
            order.rotate_left(run % engines.len());
            for i in order {
                let entry = &mut per_engine[i];
                bar.set_message(format!("{} / {}", w.name, entry.engine.name()));
                if let Ok(samples) = &mut entry.runs {
                    match engines::run(entry.engine, w, path, &backends) {
                        Ok(s) => samples.push(s),
                        Err(e) => entry.runs = Err(e),
                    }
                }
                bar.inc(1);
            }
        }
        results.push(WorkloadResult {
            workload: *w,
            engines: per_engine,
        });
    }
    bar.finish_and_clear();
    let mut json_rows = report::io_json(&results);
    if !results.is_empty() {
        println!("{}", report::table(&results, args.runs));
        print_trait_cost(&results);
        print_uring(&results);
    }
    let mut panels = Vec::new();
    if !wal_chosen.is_empty() {
        let fio = fio_version.is_some();
        run_wal(
            args,
            &wal_chosen,
            fio,
            &results,
            &mut json_rows,
            &mut panels,
        )?;
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "diskio_bench": env!("CARGO_PKG_VERSION"),
            "runs": args.runs,
            "duration_ms": args.duration_ms,
            "fio": fio_version,
            "peers": cfg!(feature = "peers"),
            "rows": json_rows,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("figures written to {}", path.display());
        if !panels.is_empty() {
            let svg = path.with_extension("svg");
            plot::write_svg(&svg, &panels)
                .map_err(|e| format!("writing {}: {e}", svg.display()))?;
            println!(
                "durable WAL latency distributions plotted in {}",
                svg.display()
            );
        }
    }
    if args.clean {
        std::fs::remove_dir_all(&args.dir)
            .map_err(|e| format!("removing {}: {e}", args.dir.display()))?;
    }
    Ok(())
}

/// Something that runs a WAL workload: our log on a backend, a peer, or an unsynced reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalEngine {
    Ours(WalBackend),
    #[cfg(feature = "peers")]
    Peer(benches::peers::Peer),
    BufWriter,
    /// fio writing `bytes` of fresh (preallocated) blocks as an unsynced log does, in 4 MiB
    /// `O_DIRECT` writes one at a time: the disk's rate for those writes, as records of the
    /// workload's frame size per second.
    FreshBlocks {
        bytes: u64,
    },
}

/// The block of [`WalEngine::FreshBlocks`]: the WAL's largest group.
const FRESH_BLOCK: usize = 4 << 20;

impl WalEngine {
    /// Every engine; `fio` says whether fio runs (installed, not `--no-fio`).
    fn all(args: &Args, fio: bool) -> Vec<WalEngine> {
        #[allow(unused_mut)] // grows with the peers feature
        let mut v = vec![
            WalEngine::Ours(WalBackend::Blocking),
            WalEngine::Ours(WalBackend::Raw),
            WalEngine::Ours(WalBackend::Uring),
            WalEngine::Ours(WalBackend::BlockingBuffered),
            WalEngine::Ours(WalBackend::RawBuffered),
        ];
        #[cfg(feature = "peers")]
        v.extend(benches::peers::Peer::ALL.map(WalEngine::Peer));
        v.push(WalEngine::BufWriter);
        if fio {
            let mib: u64 = if args.quick { 256 } else { 1024 };
            v.push(WalEngine::FreshBlocks { bytes: mib << 20 });
        }
        v
    }

    /// Whether this engine runs `w`: peers are measured durable, the `BufWriter` unsynced.
    fn applies(self, w: &WalWorkload) -> bool {
        match self {
            WalEngine::Ours(_) => true,
            #[cfg(feature = "peers")]
            WalEngine::Peer(_) => w.durability == Durability::Sync && w.segment_bytes.is_none(),
            WalEngine::BufWriter => w.durability != Durability::Sync && w.writers == 1,
            WalEngine::FreshBlocks { .. } => {
                w.durability == Durability::None && w.segment_bytes.is_none()
            }
        }
    }

    fn is_reference(self) -> bool {
        !matches!(self, WalEngine::Ours(_))
    }

    fn name(self) -> &'static str {
        match self {
            WalEngine::Ours(b) => b.name(),
            #[cfg(feature = "peers")]
            WalEngine::Peer(p) => p.name(),
            WalEngine::BufWriter => "BufWriter, no sync",
            WalEngine::FreshBlocks { .. } => "fio, fresh blocks",
        }
    }

    fn run(self, w: &WalWorkload, dir: &std::path::Path) -> Result<Figures, String> {
        match self {
            WalEngine::Ours(b) => wal_bench::run(b, w, dir),
            #[cfg(feature = "peers")]
            WalEngine::Peer(p) => benches::peers::run(p, w, dir),
            WalEngine::BufWriter => wal_bench::buf_writer(w, dir),
            WalEngine::FreshBlocks { bytes } => {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                let bytes_s = fio::fresh_write(&dir.join("fresh.dat"), bytes, FRESH_BLOCK)?;
                let frame = wal::format::frame_len(w.record) as f64;
                Ok(Figures {
                    iops: bytes_s / frame,
                    mib_s: bytes_s / f64::from(1 << 20),
                    p50_us: f64::NAN,
                    p99_us: f64::NAN,
                    p999_us: f64::NAN,
                    mean_us: f64::NAN,
                    cpu_us_per_op: f64::NAN,
                    user_cpu_us_per_op: f64::NAN,
                    curve_us: [f64::NAN; benches::report::CURVE.len()],
                })
            }
        }
    }
}

/// Runs the WAL workloads on each backend, alternating, and prints medians; the durable single
/// writer is compared with a thread doing `pwrite` + `fdatasync` over written blocks, when that
/// workload ran.
fn run_wal(
    args: &Args,
    chosen: &[WalWorkload],
    fio: bool,
    engines: &[WorkloadResult],
    json_rows: &mut Vec<serde_json::Value>,
    panels: &mut Vec<plot::Panel>,
) -> Result<(), String> {
    let backends = WalEngine::all(args, fio);
    if !cfg!(feature = "peers") {
        println!(
            "peer WALs: not built (cargo run --release -p benches --features peers --bin diskio-bench)"
        );
    }
    let bar = ProgressBar::new((chosen.len() * backends.len() * args.runs) as u64);
    let sync_ref = engines
        .iter()
        .find(|r| r.workload.pattern == Pattern::WriteSync)
        .and_then(|r| r.figures(Engine::Threads));
    let mut rows = Vec::new();
    for w in chosen {
        let mut runs: Vec<Option<Result<Vec<Figures>, String>>> = backends
            .iter()
            .map(|b| b.applies(w).then(|| Ok(Vec::new())))
            .collect();
        for run in 0..args.runs {
            for k in 0..backends.len() {
                let i = (k + run) % backends.len();
                bar.set_message(format!("{} / {}", w.name, backends[i].name()));
                if let Some(Ok(v)) = &mut runs[i] {
                    match backends[i].run(w, &w.dir(&args.dir)) {
                        Ok(f) => v.push(f),
                        Err(e) => runs[i] = Some(Err(e)),
                    }
                }
                bar.inc(1);
            }
        }
        rows.push((w, runs));
    }
    bar.finish_and_clear();
    println!(
        "{:<34} {:<24} {:>10} {:>8} {:>8} {:>9} {:>8}  vs the best reference | p50 vs pwrite+fdatasync",
        "WAL, 256-byte records*", "engine", "records/s", "p50 us", "p99 us", "p99.9 us", "CPU us"
    );
    println!("{}", "-".repeat(130));
    for (w, runs) in rows {
        let medians: Vec<Option<Figures>> = runs
            .iter()
            .map(|r| match r {
                Some(Ok(v)) if !v.is_empty() => Some(Figures::median(v)),
                _ => None,
            })
            .collect();
        for (k, r) in runs.iter().enumerate() {
            let figures = match (r, medians[k]) {
                (Some(Ok(_)), Some(f)) => report::figures_json(&f),
                (Some(Err(e)), _) => serde_json::json!({ "error": e }),
                _ => continue,
            };
            json_rows.push(serde_json::json!({
                "table": "wal",
                "workload": w.name,
                "engine": backends[k].name(),
                "figures": figures,
            }));
        }
        if w.durability == Durability::Sync {
            panels.push(plot::Panel {
                title: format!("{} (median of {} run(s) per point)", w.name, args.runs),
                engines: backends
                    .iter()
                    .zip(&medians)
                    .filter_map(|(b, f)| f.map(|f| (b.name().to_owned(), f)))
                    .collect(),
            });
        }
        // The best reference of this workload: the fastest peer (durable) or the BufWriter.
        let best = backends
            .iter()
            .zip(&medians)
            .filter(|(b, _)| b.is_reference() && !matches!(b, WalEngine::FreshBlocks { .. }))
            .filter_map(|(b, f)| f.map(|f| (b.name(), f)))
            .max_by(|a, b| a.1.iops.total_cmp(&b.1.iops));
        let ceiling = backends
            .iter()
            .zip(&medians)
            .find(|(b, _)| matches!(b, WalEngine::FreshBlocks { .. }))
            .and_then(|(_, f)| *f);
        let mut first = true;
        for (k, r) in runs.iter().enumerate() {
            let Some(r) = r else { continue };
            let label = if first { w.name } else { "" };
            first = false;
            match (r, medians[k]) {
                (Ok(_), Some(f)) => {
                    let vs_best = match best {
                        Some((name, b)) if !backends[k].is_reference() => {
                            format!("{:.2}x {name}", f.iops / b.iops)
                        }
                        _ => String::new(),
                    };
                    let vs_sync = match sync_ref {
                        Some(rf)
                            if w.writers == 1
                                && w.durability == Durability::Sync
                                && !w.in_memory =>
                        {
                            format!(" | {:.2}x ({:.1} us)", f.p50_us / rf.p50_us, rf.p50_us)
                        }
                        // Several unsynced writers: the time each call takes, on average.
                        _ if w.writers > 1 && w.durability == Durability::None => {
                            format!("{:.3} us per call", w.writers as f64 / f.iops * 1e6)
                        }
                        _ => String::new(),
                    };
                    // Unsynced: the share of the disk's rate for fresh blocks it reaches.
                    let vs_disk = match ceiling {
                        Some(c) if !backends[k].is_reference() => {
                            format!(" | {:.2}x fresh blocks", f.iops / c.iops)
                        }
                        _ => String::new(),
                    };
                    println!(
                        "{label:<34} {:<24} {:>10.0} {:>8.1} {:>8.1} {:>9.1} {:>8.2}  {vs_best}{vs_sync}{vs_disk}",
                        backends[k].name(),
                        f.iops,
                        f.p50_us,
                        f.p99_us,
                        f.p999_us,
                        f.cpu_us_per_op
                    );
                }
                (Err(e), _) => println!("{label:<34} {:<24} cannot run: {e}", backends[k].name()),
                (Ok(_), None) => println!("{label:<34} {:<24} no runs", backends[k].name()),
            }
        }
    }
    println!(
        "\nmedians of {} run(s), engines alternated; references: the fastest peer (durable), a \
         BufWriter (unsynced), one thread's pwrite + fdatasync over written blocks (p50); \
         fio, fresh blocks: fio's sequential 4 MiB O_DIRECT writes, one in flight, of a new \
         preallocated file, as records of the workload's frame size per second (the disk's \
         rate for the writes an unsynced log makes); \
         * unless the workload says otherwise; CPU us: user + system time of the whole process \
         (every thread, io_uring workers included) per record, over the measured second (the \
         JSON report gives its user part too)",
        args.runs
    );
    let records: u64 = if args.quick { 100_000 } else { 1_000_000 };
    wal_bench::print_replay(records, args.runs, &args.dir.join("wal-replay"), json_rows);
    Ok(())
}

/// Replay of sealed segments from the page cache, against a `pread` loop over the same files.
/// The cost of the trait path at queue depth 1 from the page cache: mean latency of the backend
/// minus mean latency of a direct `pread`.
fn print_trait_cost(results: &[WorkloadResult]) {
    let Some(r) = results.iter().find(|r| {
        r.workload.depth == 1 && !r.workload.direct && r.workload.pattern == Pattern::RandomRead
    }) else {
        return;
    };
    if let (Some(reference), Some(backend)) =
        (r.figures(Engine::Threads), r.figures(Engine::Blocking))
    {
        println!(
            "cost of the trait path (owned buffer, future, queue, thread hop) at QD1 from the page cache: \
             {:.2} us per read (mean {:.2} us vs pread {:.2} us; p50 {:.2} vs {:.2} us)",
            backend.mean_us - reference.mean_us,
            backend.mean_us,
            reference.mean_us,
            backend.p50_us,
            reference.p50_us
        );
    }
}

/// diskio-uring against the references its figures are judged by, from the table above: fio,
/// `tokio::fs` and `diskio-raw` in throughput, and at queue depth 1 the p50 latency of
/// `diskio-raw` and `diskio-blocking`.
fn print_uring(results: &[WorkloadResult]) {
    let mut lines = Vec::new();
    for r in results {
        let Some(uring) = r.figures(Engine::Uring) else {
            continue;
        };
        let mut parts = Vec::new();
        if r.workload.depth == 1 {
            for reference in [Engine::Raw, Engine::Blocking] {
                if let Some(f) = r.figures(reference) {
                    parts.push(format!(
                        "p50 {:.1} us = {:.2}x {}",
                        uring.p50_us,
                        uring.p50_us / f.p50_us,
                        reference.name()
                    ));
                }
            }
        } else {
            for reference in [Engine::Fio, Engine::TokioFs, Engine::Raw] {
                if let Some(f) = r.figures(reference) {
                    parts.push(format!("{:.2}x {}", uring.iops / f.iops, reference.name()));
                }
            }
        }
        if !parts.is_empty() {
            lines.push(format!("  {}: {}", r.workload.name, parts.join(", ")));
        }
    }
    if !lines.is_empty() {
        println!("diskio-uring (IOPS ratios; at QD1, p50 latency ratios, lower is better):");
        for line in lines {
            println!("{line}");
        }
    }
}
