//! `gantry-bench`: measures Gantry against the brief's targets, with the
//! real `gantry server` and `gantry-launcher` binaries on 127.0.0.1.
//!
//! - dispatch: run submitted → launcher has it, on an idle pool, measured
//!   with real launchers (from the run's recorded transitions) and with a
//!   protocol-level client that timestamps the lease's arrival itself;
//! - burst: 120 runs on 120 idle launchers, until all started;
//! - throughput: runs completed per second with `true`, beside the raw
//!   floor of spawning `true` from Rust;
//! - rss: an idle launcher's resident memory;
//! - idle: 1,000 and 10,000 simulated workers (real registrations, real
//!   long-polls and heartbeats) held by one server: its memory and CPU;
//! - logs: one run printing 100 MiB through a real launcher: stored MB/s,
//!   and the lag of `gantry run logs -f` (on another replica, with
//!   replicas) behind the printing;
//! - ui: the web UI's server time per page with 1,000 runs, 100 workers
//!   and a 100 MB log.
//! - peer (only when named in `--only`): the figures `make bench-peers`
//!   puts beside Prefect's, also as plain numbers in `--json`'s `figures`.
//!
//! Every benchmark runs in a fresh temporary directory with its own server;
//! every child process dies with the bench. Figures go to stdout as a table.
//!
//! With `--database-url`, every benchmark runs twice in the same run: on
//! SQLite, then on a fresh database of that PostgreSQL server, served by
//! `--replicas` processes (runs submitted to the first, launchers on the
//! last, so dispatch crosses replicas).

mod api;
mod benches;
mod env;
mod procs;
mod report;
mod sim;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use crate::benches::Opts;
use crate::env::Ctx;
use crate::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    /// Dispatch latency, real launchers and a protocol-level client.
    Dispatch,
    /// 120 runs on 120 launchers (and the launchers' idle RSS).
    Burst,
    /// Runs completed per second with `true`, and the raw spawn floor.
    Throughput,
    /// One idle launcher's RSS.
    Rss,
    /// The server's cost of N idle simulated workers.
    Idle,
    /// One run printing 100 MiB: stored MB/s, and a follower's lag.
    Logs,
    /// The web UI's server time per page (1,000 runs, 100 workers, a 100 MB log).
    Ui,
    /// What `make bench-peers` compares with Prefect: pickup latency, a burst
    /// on a few launchers, idle launcher memory. Only run when named.
    Peer,
}

const ALL: [Bench; 7] = [
    Bench::Rss,
    Bench::Dispatch,
    Bench::Burst,
    Bench::Throughput,
    Bench::Idle,
    Bench::Logs,
    Bench::Ui,
];

#[derive(Debug, Parser)]
#[command(
    name = "gantry-bench",
    version,
    about = "Benchmarks Gantry's control plane and launcher against the brief's targets."
)]
struct Args {
    /// Shorter runs: fewer samples, shorter windows.
    #[arg(long)]
    quick: bool,

    /// Run only these benchmarks (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Bench>,

    /// Skip these benchmarks (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Bench>,

    /// Where `gantry` and `gantry-launcher` are. Default: beside this binary.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,

    /// Simulated idle worker counts (comma-separated). Default 1000,10000.
    #[arg(long, value_delimiter = ',')]
    idle_workers: Vec<usize>,

    /// How long to measure the server with the idle workers. Default 60s (quick: 20s).
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_window: Option<Duration>,

    /// Runs and launchers in the burst.
    #[arg(long, default_value_t = 120)]
    burst: usize,

    /// Dispatch latency samples. Default 200 (quick: 40).
    #[arg(long)]
    samples: Option<usize>,

    /// Real launchers in the dispatch latency benchmark.
    #[arg(long, default_value_t = 4)]
    dispatch_launchers: usize,

    /// Launchers in the throughput benchmark.
    #[arg(long, default_value_t = 8)]
    throughput_launchers: usize,

    /// Runs in the throughput benchmark. Default 400 (quick: 80).
    #[arg(long)]
    throughput_runs: Option<usize>,

    /// peer: pickup latency samples (one run at a time).
    #[arg(long, default_value_t = 20)]
    peer_samples: usize,

    /// peer: launchers, each running one run at a time.
    #[arg(long, default_value_t = 4)]
    peer_workers: usize,

    /// peer: runs submitted at once.
    #[arg(long, default_value_t = 40)]
    peer_burst: usize,

    /// peer: the longest random pause before each pickup sample.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    peer_jitter: Duration,

    /// Keep each benchmark's temporary directory (logs, database).
    #[arg(long)]
    keep_temp: bool,

    /// Make the temporary directories here instead of $TMPDIR.
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,

    /// The server's log level (it logs to a file in the temporary directory).
    #[arg(long, default_value = "info")]
    server_log_level: String,

    /// Also measure on PostgreSQL: an admin URL (postgres://USER@HOST:PORT/postgres);
    /// each benchmark gets a new database there.
    #[arg(long, env = "GANTRY_BENCH_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,

    /// Control-plane replicas on PostgreSQL (with --database-url).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// logs: how much the run prints. Default 100 MiB (quick: 20 MiB).
    #[arg(long, value_name = "BYTES")]
    log_bytes: Option<u64>,

    /// Internal: print BYTES of numbered, time-stamped lines and exit (the
    /// command of the `logs` benchmark's runs).
    #[arg(long, hide = true, value_name = "BYTES")]
    emit_log: Option<u64>,

    /// Internal: with --emit-log, print at this many bytes per second.
    #[arg(long, hide = true, value_name = "BYTES_PER_S", requires = "emit_log")]
    emit_rate: Option<f64>,
}

impl Args {
    fn opts(&self) -> Opts {
        let q = self.quick;
        Opts {
            dispatch_samples: self.samples.unwrap_or(if q { 40 } else { 200 }),
            dispatch_launchers: self.dispatch_launchers.max(1),
            dispatch_cap: Duration::from_secs(if q { 30 } else { 120 }),
            burst: self.burst.max(1),
            throughput_launchers: self.throughput_launchers.max(1),
            throughput_runs: self.throughput_runs.unwrap_or(if q { 80 } else { 400 }),
            throughput_cap: Duration::from_secs(if q { 40 } else { 120 }),
            raw_spawns: if q { 300 } else { 2000 },
            log_bytes: self
                .log_bytes
                .unwrap_or((if q { 20 } else { 100 }) << 20)
                .max(100),
            rss_settle: Duration::from_secs(if q { 2 } else { 5 }),
            idle_workers: if self.idle_workers.is_empty() {
                vec![1000, 10_000]
            } else {
                self.idle_workers.clone()
            },
            idle_settle: Duration::from_secs(if q { 3 } else { 10 }),
            idle_window: self
                .idle_window
                .unwrap_or(Duration::from_secs(if q { 20 } else { 60 })),
            idle_registration_limit: Duration::from_secs(if q { 120 } else { 300 }),
            peer_samples: self.peer_samples.max(1),
            peer_workers: self.peer_workers.max(1),
            peer_burst: self.peer_burst.max(1),
            // gen_range needs a non-empty range.
            peer_jitter: self.peer_jitter.max(Duration::from_millis(1)),
        }
    }

    /// `ALL` in its order, or what `--only` names (which may add `peer`).
    fn selected(&self) -> Vec<Bench> {
        let named = ALL.into_iter().chain([Bench::Peer]);
        named
            .filter(|b| {
                if self.only.is_empty() {
                    ALL.contains(b)
                } else {
                    self.only.contains(b)
                }
            })
            .filter(|b| !self.skip.contains(b))
            .collect()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(bytes) = args.emit_log {
        return match benches::emit_log(bytes, args.emit_rate) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("gantry-bench --emit-log: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gantry-bench: cannot start a tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    procs::kill_all();
    code
}

async fn run(args: Args) -> ExitCode {
    procs::install_guards();
    let nofile = stats::raise_nofile();
    let bin_dir = args.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let opts = args.opts();
    let cores = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(0);
    eprintln!(
        "gantry-bench {}: binaries in {}, {cores} cores, open-file limit {nofile}{}",
        gantry_wire::VERSION,
        bin_dir.display(),
        if args.quick { ", quick mode" } else { "" }
    );
    let started = Instant::now();
    let sqlite = match Ctx::new(
        bin_dir,
        args.keep_temp,
        args.server_log_level.clone(),
        args.tmp_dir.clone(),
    ) {
        Ok(ctx) => ctx,
        Err(error) => {
            eprintln!("gantry-bench: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut passes = vec![(String::new(), sqlite.clone())];
    if let Some(url) = &args.database_url {
        let mut postgres = sqlite.clone();
        postgres.engine = env::Engine::Postgres {
            admin_url: url.clone(),
            replicas: args.replicas as usize,
        };
        let label = match args.replicas {
            1 => " [PostgreSQL]".to_string(),
            n => format!(" [PostgreSQL, {n} replicas]"),
        };
        passes.push((label, postgres));
    }
    let mut report = Report::default();
    let mut loads = Vec::new();
    let runs: Vec<(String, Ctx, Bench)> = passes
        .iter()
        .flat_map(|(label, ctx)| {
            args.selected()
                .into_iter()
                .map(move |bench| (label.clone(), ctx.clone(), bench))
        })
        .collect();
    for (label, ctx, bench) in runs {
        report.pass = label.clone();
        if !label.is_empty() {
            eprint!("\n[{}]", label.trim());
        }
        if procs::interrupted() {
            break;
        }
        let at = Instant::now();
        let load_before = stats::load_average();
        match bench {
            Bench::Rss => {
                eprintln!("\n== idle launcher RSS");
                if let Err(e) = benches::launcher_rss(&ctx, &opts, &mut report).await {
                    report.error("rss", &e);
                }
            }
            Bench::Dispatch => {
                eprintln!("\n== dispatch latency, protocol-level client");
                if let Err(e) = benches::dispatch_protocol(&ctx, &opts, &mut report).await {
                    report.error("dispatch (protocol)", &e);
                }
                eprintln!("\n== dispatch latency, real launchers");
                if let Err(e) = benches::dispatch_launchers(&ctx, &opts, &mut report).await {
                    report.error("dispatch (launchers)", &e);
                }
            }
            Bench::Burst => {
                eprintln!(
                    "\n== burst: {} runs on {} launchers",
                    opts.burst, opts.burst
                );
                if let Err(e) = benches::burst(&ctx, &opts, &mut report).await {
                    report.error("burst", &e);
                }
            }
            Bench::Throughput => {
                eprintln!("\n== throughput");
                if let Err(e) = benches::throughput(&ctx, &opts, &mut report).await {
                    report.error("throughput", &e);
                }
            }
            Bench::Logs => {
                eprintln!("\n== one run printing {} bytes of log", opts.log_bytes);
                if let Err(e) = benches::log_stream(&ctx, &opts, &mut report).await {
                    report.error("logs", &e);
                }
            }
            Bench::Ui => {
                eprintln!("\n== web UI pages");
                if let Err(e) = benches::ui_pages(&ctx, &opts, &mut report).await {
                    report.error("ui", &e);
                }
            }
            Bench::Peer => {
                eprintln!(
                    "\n== peer figures: {} samples, {} runs on {} launchers",
                    opts.peer_samples, opts.peer_burst, opts.peer_workers
                );
                if let Err(e) = benches::peer(&ctx, &opts, &mut report).await {
                    report.error("peer", &e);
                }
            }
            Bench::Idle => {
                for &n in &opts.idle_workers {
                    eprintln!("\n== {n} idle simulated workers");
                    if let Err(e) = benches::idle_workers(&ctx, &opts, n, &mut report).await {
                        report.error(&format!("idle {n}"), &e);
                    }
                }
            }
        }
        let load_after = stats::load_average();
        eprintln!(
            "  ({:.0} s; load average {load_before:.1} → {load_after:.1})",
            at.elapsed().as_secs_f64()
        );
        loads.push((bench, load_before, load_after, at.elapsed().as_secs_f64()));
    }
    report.pass.clear();
    for (bench, before, after, secs) in loads {
        let name = bench
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        report.info(
            "machine",
            &format!("load avg (1 min) around `{name}`, {secs:.0} s"),
            format!("{before:.1} → {after:.1} on {cores} cores"),
        );
    }
    if procs::interrupted() {
        // The signal handler is removing the temporary directories and exits.
        tokio::time::sleep(Duration::from_secs(5)).await;
        return ExitCode::from(130);
    }
    report.print();
    println!(
        "\n(total {:.0} s{})",
        started.elapsed().as_secs_f64(),
        if args.quick { ", --quick" } else { "" }
    );
    if let Some(path) = &args.json {
        match serde_json::to_vec_pretty(&report) {
            Ok(bytes) => {
                if let Err(error) = std::fs::write(path, bytes) {
                    eprintln!("gantry-bench: cannot write {}: {error}", path.display());
                }
            }
            Err(error) => eprintln!("gantry-bench: {error}"),
        }
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
