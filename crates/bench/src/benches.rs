//! The benchmarks. Each builds its own world (temp dir, server, pool,
//! launchers), measures, adds rows to the report, and tears it all down.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gantry_wire::run::{Run, RunState};
use tokio::sync::mpsc;

use crate::api::{entered, http_client, left_ready, Api};
use crate::env::{spawn_launchers, wait_idle, Ctx, LauncherOpts, Pool, Server};
use crate::procs::kill_many;
use crate::report::{mb, ms, Report, Verdict};
use crate::sim::{self, IdleStats};
use crate::stats::{proc_status, summarize, wall_ms, CpuMeter, Summary, ThreadWatch};

/// Sizes and time limits; `--quick` shrinks them.
#[derive(Debug, Clone)]
pub struct Opts {
    pub dispatch_samples: usize,
    pub dispatch_launchers: usize,
    pub dispatch_cap: Duration,
    pub burst: usize,
    pub throughput_launchers: usize,
    pub throughput_runs: usize,
    pub throughput_cap: Duration,
    pub raw_spawns: usize,
    pub rss_settle: Duration,
    pub idle_workers: Vec<usize>,
    pub idle_settle: Duration,
    pub idle_window: Duration,
    pub idle_registration_limit: Duration,
}

const DISPATCH_TARGET: &str = "p50 ≤ 10 ms, p99 ≤ 50 ms";

fn p50_p99(s: &Summary) -> String {
    format!("{} / {}", ms(s.p50), ms(s.p99))
}

fn dispatch_verdict(s: &Summary) -> Verdict {
    Verdict::check(s.n > 0 && s.p50 <= 10.0 && s.p99 <= 50.0)
}

/// Submits `count` runs of `command` over `parallel` connections at once.
async fn submit_many(
    api: &Api,
    pool: &str,
    command: &'static [&'static str],
    count: usize,
    parallel: usize,
) -> Result<Vec<String>> {
    let next = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..parallel.max(1) {
        let (api, pool, next) = (api.clone(), pool.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                {
                    let mut next = next.lock().expect("counter lock");
                    if *next >= count {
                        break;
                    }
                    *next += 1;
                }
                ids.push(api.submit(&pool, command).await?.id);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for task in tasks {
        ids.extend(task.await??);
    }
    Ok(ids)
}

/// Dispatch latency with real launchers, from the run's recorded transitions.
pub async fn dispatch_launchers(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "dispatch, real launchers";
    let dir = ctx.temp_dir("dispatch")?;
    let server = Server::start(ctx, dir.path(), "30s").await?;
    let pool = server.pool(ctx, "dispatch").await?;
    let mut launchers = spawn_launchers(
        ctx,
        dir.path(),
        &pool,
        0,
        o.dispatch_launchers,
        LauncherOpts::default(),
    )?;
    wait_idle(
        &server.api,
        &pool,
        &mut launchers,
        o.dispatch_launchers,
        Duration::from_secs(60),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut leased, mut started, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed = 0;
    let deadline = Instant::now() + o.dispatch_cap;
    let mut capped = false;
    for _ in 0..o.dispatch_samples {
        if Instant::now() >= deadline {
            capped = true;
            break;
        }
        let submitted = wall_ms();
        let run = server.api.submit(&pool.id, &["true"]).await?;
        let run = server
            .api
            .wait_ended(&run.id, Duration::from_millis(5), Duration::from_secs(60))
            .await?;
        if run.state != RunState::Finished {
            failed += 1;
        }
        if let Some(at) = entered(&run, RunState::Preparing) {
            leased.push((at - submitted).max(0.0));
        }
        if let Some(at) = entered(&run, RunState::Applying) {
            started.push((at - submitted).max(0.0));
        }
        if let Some(at) = run
            .transitions
            .last()
            .and_then(|t| crate::stats::rfc3339_ms(&t.at).ok())
        {
            ended.push((at - submitted).max(0.0));
        }
        // Let the launcher settle back into its poll: an idle pool.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leased, started, ended) = (summarize(&leased), summarize(&started), summarize(&ended));
    report.add(
        B,
        "submit → PREPARING (leased), p50 / p99",
        p50_p99(&leased),
        DISPATCH_TARGET,
        dispatch_verdict(&leased),
    );
    report.add(
        B,
        "submit → APPLYING (launcher started it)",
        p50_p99(&started),
        DISPATCH_TARGET,
        dispatch_verdict(&started),
    );
    report.info(B, "  max submit → APPLYING", ms(started.max));
    report.info(
        B,
        "trivial run `true`, submit → FINISHED p50",
        ms(ended.p50),
    );
    report.info(
        B,
        "samples (launchers)",
        format!(
            "{}{} ({})",
            started.n,
            if capped { ", time cap hit" } else { "" },
            o.dispatch_launchers
        ),
    );
    if failed > 0 {
        report.note(format!(
            "{B}: {failed} of {} runs did not finish FINISHED",
            started.n
        ));
    }
    if started.max > 1000.0 {
        report.note(format!(
            "{B}: some runs waited {} for an idle launcher; a launcher that just finished a run keeps a poll with \
             free_slots=0 open for up to 20 s (see the closing notes)",
            ms(started.max)
        ));
    }
    kill_many(launchers);
    Ok(())
}

enum Seen {
    Lease { run_id: String, at: Instant },
    Done,
}

/// Dispatch latency at the protocol level: simulated workers long-poll and
/// timestamp the lease's arrival themselves.
pub async fn dispatch_protocol(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "dispatch, protocol client";
    const WORKERS: usize = 4;
    let dir = ctx.temp_dir("dispatch-protocol")?;
    let server = Server::start(ctx, dir.path(), "30s").await?;
    let pool = server.pool(ctx, "dispatch").await?;
    let credentials = Arc::new(pool.credentials);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let until = Instant::now() + o.dispatch_cap + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for i in 0..WORKERS {
        let request = sim::registration(&credentials, &format!("proto-{i}"));
        let worker = Arc::new(
            sim::Worker::register(
                http_client(Duration::from_secs(60)),
                &server.api.base,
                &request,
            )
            .await?,
        );
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let Ok(response) = worker.poll(1, sim::POLL_WAIT_MS).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                for lease in response.leases {
                    let _ = tx.send(Seen::Lease {
                        run_id: lease.run_id.clone(),
                        at: Instant::now(),
                    });
                    let _ = worker
                        .report_state(&lease.run_id, &lease.lease_id, RunState::Applying)
                        .await;
                    let _ = worker.finish_ok(&lease).await;
                    let _ = tx.send(Seen::Done);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut latency, mut submit_rtt) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + o.dispatch_cap;
    for _ in 0..o.dispatch_samples {
        if Instant::now() >= deadline {
            break;
        }
        let t0 = Instant::now();
        let run = server.api.submit(&pool.id, &["true"]).await?;
        submit_rtt.push(t0.elapsed().as_secs_f64() * 1000.0);
        let arrived = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(seen) = rx.recv().await {
                if let Seen::Lease { run_id, at } = seen {
                    if run_id == run.id {
                        return Some(at);
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .with_context(|| format!("run {} never reached a simulated worker", run.id))?;
        latency.push(arrived.duration_since(t0).as_secs_f64() * 1000.0);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(seen) = rx.recv().await {
                if matches!(seen, Seen::Done) {
                    break;
                }
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in &tasks {
        task.abort();
    }
    let latency = summarize(&latency);
    let submit_rtt = summarize(&submit_rtt);
    report.add(
        B,
        "submit → lease arrives at a poller, p50 / p99",
        p50_p99(&latency),
        DISPATCH_TARGET,
        dispatch_verdict(&latency),
    );
    report.info(B, "  max", ms(latency.max));
    report.info(B, "POST /runs round trip, p50 / p99", p50_p99(&submit_rtt));
    report.info(
        B,
        "samples (simulated pollers)",
        format!("{} ({WORKERS})", latency.n),
    );
    Ok(())
}

/// Waits until every run of `ids` has entered APPLYING (or ended), polling
/// the pool's run list.
async fn wait_all_started(
    api: &Api,
    pool: &Pool,
    count: usize,
    limit: Duration,
) -> Result<Vec<Run>> {
    let deadline = Instant::now() + limit;
    loop {
        let runs = api.runs(&pool.id, None).await?;
        let started = runs
            .iter()
            .filter(|r| entered(r, RunState::Applying).is_some() || r.state.is_terminal())
            .count();
        if started >= count {
            return Ok(runs);
        }
        if Instant::now() >= deadline {
            bail!("only {started} of {count} runs started within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 120 runs on 120 idle launchers; also the cold variant (runs queued
/// first, then the launchers start) and the launchers' idle RSS.
pub async fn burst(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "burst";
    let n = o.burst;
    const COMMAND: &[&str] = &["sleep", "2"];
    {
        let dir = ctx.temp_dir("burst")?;
        let server = Server::start(ctx, dir.path(), "30s").await?;
        let pool = server.pool(ctx, "burst").await?;
        let spawned = Instant::now();
        let mut launchers = spawn_launchers(ctx, dir.path(), &pool, 0, n, LauncherOpts::default())?;
        let took = wait_idle(
            &server.api,
            &pool,
            &mut launchers,
            n,
            Duration::from_secs(120),
        )
        .await?;
        report.info(
            B,
            &format!("{n} launchers started and registered"),
            ms((spawned.elapsed().max(took)).as_secs_f64() * 1000.0),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss: Vec<f64> = launchers
            .iter()
            .filter_map(|l| proc_status(l.pid()).ok())
            .map(|s| s.rss_kb as f64)
            .collect();
        let rss = summarize(&rss);
        report.add(
            B,
            &format!("idle launcher RSS, median / max of {}", rss.n),
            format!("{} / {}", mb(rss.p50 as u64), mb(rss.max as u64)),
            "≤ 15 MB",
            Verdict::check(rss.n > 0 && rss.max <= 15.0 * 1024.0),
        );

        let t0 = wall_ms();
        submit_many(&server.api, &pool.id, COMMAND, n, 8).await?;
        let submitted = wall_ms() - t0;
        let runs = wait_all_started(&server.api, &pool, n, Duration::from_secs(60)).await?;
        let leased = runs.iter().filter_map(left_ready).fold(0.0, f64::max) - t0;
        let started = runs
            .iter()
            .filter_map(|r| entered(r, RunState::Applying))
            .fold(0.0, f64::max)
            - t0;
        let workers: HashSet<_> = runs.iter().filter_map(|r| r.worker_id.clone()).collect();
        report.info(
            B,
            &format!("submitting {n} runs (8 connections)"),
            ms(submitted),
        );
        report.add(
            B,
            &format!("{n} runs on {n} idle launchers: all left READY"),
            ms(leased),
            "≤ 1 s",
            Verdict::check(leased <= 1000.0),
        );
        report.add(
            B,
            &format!("{n} runs on {n} idle launchers: all APPLYING"),
            ms(started),
            "≤ 1 s",
            Verdict::check(started <= 1000.0),
        );
        report.info(
            B,
            "  last one APPLYING, after the last submit returned",
            ms((started - submitted).max(0.0)),
        );
        report.info(
            B,
            "distinct workers used",
            format!("{} of {n}", workers.len()),
        );
        kill_many(launchers);
    }
    {
        let dir = ctx.temp_dir("burst-cold")?;
        let server = Server::start(ctx, dir.path(), "30s").await?;
        let pool = server.pool(ctx, "burst").await?;
        submit_many(&server.api, &pool.id, COMMAND, n, 8).await?;
        let t0 = wall_ms();
        let mut launchers = spawn_launchers(ctx, dir.path(), &pool, 0, n, LauncherOpts::default())?;
        let result = wait_all_started(&server.api, &pool, n, Duration::from_secs(120)).await;
        for launcher in launchers.iter_mut() {
            launcher.check_alive()?;
        }
        let runs = result?;
        let started = runs
            .iter()
            .filter_map(|r| entered(r, RunState::Applying))
            .fold(0.0, f64::max)
            - t0;
        report.info(
            B,
            &format!("cold: {n} queued, then {n} launchers start: all APPLYING"),
            ms(started),
        );
        kill_many(launchers);
    }
    Ok(())
}

/// Runs completed per second with `true`, and the raw floor of spawning
/// `true` from Rust.
pub async fn throughput(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "throughput";
    let l = o.throughput_launchers;
    let total = o.throughput_runs;

    // The raw floor first, on a quiet machine.
    let sequential = raw_spawns(o.raw_spawns, 1)?;
    let parallel = raw_spawns(o.raw_spawns, l)?;

    let dir = ctx.temp_dir("throughput")?;
    let server = Server::start(ctx, dir.path(), "30s").await?;
    let pool = server.pool(ctx, "throughput").await?;
    let mut launchers = spawn_launchers(ctx, dir.path(), &pool, 0, l, LauncherOpts::default())?;
    wait_idle(
        &server.api,
        &pool,
        &mut launchers,
        l,
        Duration::from_secs(60),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu = CpuMeter::start(Some(server.proc.pid()))?;
    let t0 = wall_ms();
    submit_many(&server.api, &pool.id, &["true"], total, 4).await?;
    let deadline = Instant::now() + o.throughput_cap;
    let mut capped = false;
    loop {
        let pending: usize = {
            let mut pending = 0;
            for state in [RunState::Ready, RunState::Preparing, RunState::Applying] {
                pending += server.api.runs(&pool.id, Some(state)).await?.len();
            }
            pending
        };
        if pending == 0 {
            break;
        }
        if Instant::now() >= deadline {
            capped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let server_cpu = cpu.percent()?;
    let runs = server.api.runs(&pool.id, None).await?;
    let ended: Vec<&Run> = runs.iter().filter(|r| r.state.is_terminal()).collect();
    let finished = ended
        .iter()
        .filter(|r| r.state == RunState::Finished)
        .count();
    let last = ended
        .iter()
        .filter_map(|r| {
            r.transitions
                .last()
                .and_then(|t| crate::stats::rfc3339_ms(&t.at).ok())
        })
        .fold(t0, f64::max);
    let elapsed_s = if capped {
        o.throughput_cap.as_secs_f64()
    } else {
        ((last - t0) / 1000.0).max(1e-3)
    };
    let rate = ended.len() as f64 / elapsed_s;
    report.info(
        B,
        &format!("runs completed/s, {l} launchers × `true`"),
        format!("{rate:.1}/s"),
    );
    report.info(
        B,
        "  runs ended / submitted (FINISHED)",
        format!(
            "{} / {total} ({finished}) in {:.1} s{}",
            ended.len(),
            elapsed_s,
            if capped { ", cap hit" } else { "" }
        ),
    );
    report.info(
        B,
        "  server CPU meanwhile",
        format!("{server_cpu:.0}% of a core"),
    );
    report.info(
        B,
        "raw floor: spawn+wait `true`, 1 thread",
        format!("{:.0}/s (p50 {})", sequential.0, ms(sequential.1)),
    );
    report.info(
        B,
        &format!("raw floor: spawn+wait `true`, {l} threads"),
        format!("{:.0}/s", parallel.0),
    );
    report.info(
        B,
        "  Gantry throughput / raw floor",
        format!("{:.3}×", rate / parallel.0.max(1e-9)),
    );
    if capped {
        report.note(format!(
            "throughput: the {:.0} s cap was hit with {} of {total} runs ended",
            o.throughput_cap.as_secs_f64(),
            ended.len()
        ));
    }
    kill_many(launchers);
    Ok(())
}

/// Spawns and waits for `true` `count` times over `threads` threads:
/// (spawns per second, p50 ms per spawn).
fn raw_spawns(count: usize, threads: usize) -> Result<(f64, f64)> {
    let threads = threads.max(1);
    let started = Instant::now();
    let per_thread: Vec<Result<Vec<f64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mine = count / threads + usize::from(t < count % threads);
                    let mut times = Vec::with_capacity(mine);
                    for _ in 0..mine {
                        let at = Instant::now();
                        let status = std::process::Command::new("true")
                            .status()
                            .context("spawning `true`")?;
                        if !status.success() {
                            bail!("`true` failed: {status}");
                        }
                        times.push(at.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(times)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a spawning thread"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for result in per_thread {
        times.extend(result?);
    }
    Ok((times.len() as f64 / elapsed, summarize(&times).p50))
}

/// One real launcher, registered and idle: its resident memory.
pub async fn launcher_rss(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "idle launcher";
    let dir = ctx.temp_dir("rss")?;
    let server = Server::start(ctx, dir.path(), "30s").await?;
    let pool = server.pool(ctx, "rss").await?;
    let mut launchers = spawn_launchers(ctx, dir.path(), &pool, 0, 1, LauncherOpts::default())?;
    wait_idle(
        &server.api,
        &pool,
        &mut launchers,
        1,
        Duration::from_secs(60),
    )
    .await?;
    tokio::time::sleep(o.rss_settle).await;
    let fresh = proc_status(launchers[0].pid())?;
    report.add(
        B,
        "RSS, registered and idle",
        mb(fresh.rss_kb),
        "≤ 15 MB",
        Verdict::check(fresh.rss_kb <= 15 * 1024),
    );
    let run = server.api.submit(&pool.id, &["true"]).await?;
    server
        .api
        .wait_ended(&run.id, Duration::from_millis(10), Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc_status(launchers[0].pid())?;
    report.add(
        B,
        "RSS, idle again after one run",
        mb(after.rss_kb),
        "≤ 15 MB",
        Verdict::check(after.rss_kb <= 15 * 1024),
    );
    report.info(
        B,
        "peak RSS (VmHWM), threads",
        format!("{}, {}", mb(after.hwm_kb), after.threads),
    );
    kill_many(launchers);
    Ok(())
}

/// `n` simulated idle workers held by one server: registration rate, then
/// the server's memory and CPU while they long-poll and heartbeat.
pub async fn idle_workers(ctx: &Ctx, o: &Opts, n: usize, report: &mut Report) -> Result<()> {
    let b = format!("{n} idle workers");
    let b = b.as_str();
    const REGISTRARS: usize = 32;
    const CLIENTS: usize = 8;
    let dir = ctx.temp_dir(&format!("idle-{n}"))?;
    let server = Server::start(ctx, dir.path(), "30s").await?;
    let pool = server.pool(ctx, "idle").await?;
    let server_pid = server.proc.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = proc_status(server_pid)?;

    // Sign every registration up front, so the registration phase measures the server.
    let credentials = Arc::new(pool.credentials);
    let signing = Instant::now();
    let requests = {
        let credentials = credentials.clone();
        tokio::task::spawn_blocking(move || sim::presign(&credentials, n)).await?
    };
    let sign_rate = n as f64 / signing.elapsed().as_secs_f64();

    let clients: Vec<reqwest::Client> = (0..CLIENTS)
        .map(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client builds")
        })
        .collect();
    let stats = Arc::new(IdleStats::default());
    let until = Instant::now()
        + o.idle_registration_limit
        + o.idle_settle
        + o.idle_window
        + Duration::from_secs(60);
    let queue = Arc::new(Mutex::new(
        requests.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done_at = Arc::new(Mutex::new(Vec::<f64>::with_capacity(n)));
    let cpu = CpuMeter::start(Some(server_pid))?;
    let reg_watch = ThreadWatch::start(
        server_pid,
        o.idle_registration_limit + Duration::from_secs(30),
    );
    let registering = Instant::now();
    let reg_deadline = registering + o.idle_registration_limit;
    let mut registrars = Vec::new();
    for _ in 0..REGISTRARS {
        let (queue, clients, credentials, stats, failures, done_at) = (
            queue.clone(),
            clients.clone(),
            credentials.clone(),
            stats.clone(),
            failures.clone(),
            done_at.clone(),
        );
        let base = server.api.base.clone();
        registrars.push(tokio::spawn(async move {
            let mut loops = Vec::new();
            while Instant::now() < reg_deadline {
                let Some((i, request)) = queue.lock().expect("queue lock").pop_front() else {
                    break;
                };
                let http = clients[i % clients.len()].clone();
                match sim::register_with_retry(http, &base, &credentials, request).await {
                    Ok(worker) => {
                        done_at
                            .lock()
                            .expect("lock")
                            .push(registering.elapsed().as_secs_f64());
                        let worker = Arc::new(worker);
                        loops.push(tokio::spawn(sim::idle_poll_loop(
                            worker.clone(),
                            stats.clone(),
                            until,
                        )));
                        loops.push(tokio::spawn(sim::idle_heartbeat_loop(
                            worker,
                            stats.clone(),
                            until,
                        )));
                    }
                    Err(error) => failures
                        .lock()
                        .expect("failures lock")
                        .push(format!("{error:#}")),
                }
            }
            loops
        }));
    }
    let mut loops = Vec::new();
    for registrar in registrars {
        loops.extend(registrar.await?);
    }
    let registration = registering.elapsed().as_secs_f64();
    let (reg_cpu, reg_wall) = cpu.read()?;
    let reg_threads = reg_watch.finish().await;
    let registered = loops.len() / 2;
    let failed = failures.lock().expect("failures lock").clone();
    report.add(
        b,
        "registered (signature checked by the server)",
        format!(
            "{registered} in {registration:.1} s = {:.0}/s",
            registered as f64 / registration.max(1e-9)
        ),
        &format!("{n}"),
        Verdict::check(registered == n),
    );
    {
        // The rate as the pool fills: the first and the last tenth.
        let mut times = done_at.lock().expect("lock").clone();
        times.sort_by(|a, b| a.total_cmp(b));
        let tenth = (times.len() / 10).max(1);
        if times.len() >= 20 {
            let first = tenth as f64 / times[tenth - 1].max(1e-3);
            let last =
                tenth as f64 / (times[times.len() - 1] - times[times.len() - 1 - tenth]).max(1e-3);
            report.info(
                b,
                "  rate, first / last tenth registered",
                format!("{first:.0}/s / {last:.0}/s"),
            );
        }
    }
    report.info(
        b,
        "  server CPU while registering",
        format!("{:.0}% of a core", 100.0 * reg_cpu / reg_wall.max(1e-9)),
    );
    report.note(format!(
        "{b}: server threads while registering: {reg_threads}"
    ));
    report.info(
        b,
        "  bench-side RSA signing (2048 bit)",
        format!("{sign_rate:.0}/s"),
    );
    if registered < n && failed.len() < n - registered {
        report.note(format!(
            "{b}: registration stopped at the {:.0} s limit with {registered} of {n} registered",
            o.idle_registration_limit.as_secs_f64()
        ));
    }
    if let Some(first) = failed.first() {
        report.note(format!(
            "{b}: {} registrations failed; first: {first}",
            failed.len()
        ));
    }

    tokio::time::sleep(o.idle_settle).await;
    let before = stats.snapshot();
    let server_cpu = CpuMeter::start(Some(server_pid))?;
    let idle_watch = ThreadWatch::start(server_pid, o.idle_window + Duration::from_secs(30));
    let bench_cpu = CpuMeter::start(None)?;
    stats.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(o.idle_window).await;
    stats.recording.store(false, Ordering::Relaxed);
    let server_pct = server_cpu.percent()?;
    let window = o.idle_window.as_secs_f64();
    let idle_threads = idle_watch.finish().await;
    let bench_pct = bench_cpu.percent()?;
    let after = stats.snapshot();
    let status = proc_status(server_pid)?;
    let heartbeats = summarize(&stats.heartbeat_ms.lock().expect("stats lock"));
    let [polls, poll_errors, beats, beat_errors] = [
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        after[3] - before[3],
    ];

    let grown = status.rss_kb.saturating_sub(baseline.rss_kb);
    report.info(
        b,
        "server RSS before → with workers",
        format!("{} → {}", mb(baseline.rss_kb), mb(status.rss_kb)),
    );
    report.info(
        b,
        "  per worker",
        format!("{:.1} KB", grown as f64 / registered.max(1) as f64),
    );
    report.info(
        b,
        &format!("server CPU over {window:.0} s idle"),
        format!("{server_pct:.1}% of a core"),
    );
    report.note(format!("{b}: server threads while idle: {idle_threads}"));
    report.info(
        b,
        "  polls/s, heartbeats/s answered",
        format!("{:.0}, {:.0}", polls as f64 / window, beats as f64 / window),
    );
    if polls + beats > 0 {
        // What one idle request costs the server, and what 10,000 workers
        // asking at the same per-worker rate would need.
        let per_request = server_pct / 100.0 * window / (polls + beats) as f64;
        report.info(
            b,
            "  server CPU per poll or heartbeat",
            ms(per_request * 1000.0),
        );
        if n < 10_000 && registered > 0 {
            let per_worker_rate = (polls + beats) as f64 / window / registered as f64;
            report.info(
                b,
                "  → projected CPU for 10,000 idle workers",
                format!(
                    "{:.0}% of a core",
                    100.0 * per_request * per_worker_rate * 10_000.0
                ),
            );
        }
    }
    report.info(b, "  heartbeat round trip p50 / p99", p50_p99(&heartbeats));
    report.info(
        b,
        "  failed polls / heartbeats",
        format!("{poll_errors} / {beat_errors}"),
    );
    report.info(
        b,
        "server open fds, threads",
        format!("{}, {}", status.fds, status.threads),
    );
    report.info(
        b,
        "bench (simulator) CPU",
        format!("{bench_pct:.0}% of a core"),
    );
    let unexpected = stats.unexpected_leases.load(Ordering::Relaxed);
    if unexpected > 0 {
        report.note(format!(
            "{b}: {unexpected} leases arrived although no run was queued"
        ));
    }
    if let Some(error) = stats.first_error.lock().expect("stats lock").clone() {
        report.note(format!("{b}: first protocol error: {error}"));
    }
    // Held: all registered, nothing failed, heartbeats answered well within
    // their interval (a lease survives two missed ones).
    let held = registered == n
        && poll_errors == 0
        && beat_errors == 0
        && heartbeats.n > 0
        && heartbeats.p99 < 1000.0;
    if n >= 10_000 {
        let value = if held {
            format!("{registered} held")
        } else {
            format!("{registered} registered, not held")
        };
        report.add(
            b,
            "workers held by one control plane, 2 cores",
            value,
            "≥ 10,000",
            Verdict::check(held),
        );
        if !held {
            report.note(format!(
                "{b}: \"held\" means all registered, no failed poll or heartbeat, heartbeat p99 < 1 s; \
                 measured p99 {} with {poll_errors} failed polls and {beat_errors} failed heartbeats",
                ms(heartbeats.p99)
            ));
        }
    }
    for handle in loops {
        handle.abort();
    }
    Ok(())
}
