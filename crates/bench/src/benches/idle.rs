//! Thousands of simulated idle workers held by one server: what they cost it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{p50_p99, Opts};
use crate::env::{Ctx, Server};
use crate::report::{mb, ms, Report, Verdict};
use crate::sim::{self, IdleStats};
use crate::stats::{proc_status, summarize, CpuMeter, ThreadWatch};

/// How long the server is measured before any worker registers.
const EMPTY_WINDOW: Duration = Duration::from_secs(5);

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
    let server_pid = server.pool_proc_pid;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = proc_status(server_pid)?;
    // What the server costs with no worker at all (the reaper's ticks, the
    // duty lock's checks, the relay), so that the cost per call is the
    // calls' own.
    let empty_cpu = server
        .pids()
        .into_iter()
        .map(|pid| CpuMeter::start(Some(pid)))
        .collect::<Result<Vec<_>>>()?;
    tokio::time::sleep(EMPTY_WINDOW).await;
    let empty_pct = empty_cpu
        .iter()
        .map(CpuMeter::percent)
        .sum::<Result<f64>>()?;

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
    // With replicas, the workers are spread over them, registrar by registrar.
    for r in 0..REGISTRARS {
        let (queue, clients, credentials, stats, failures, done_at) = (
            queue.clone(),
            clients.clone(),
            credentials.clone(),
            stats.clone(),
            failures.clone(),
            done_at.clone(),
        );
        let base = server.bases[r % server.bases.len()].clone();
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
    // Every replica's CPU: the idle workers are spread over them.
    let server_cpu = server
        .pids()
        .into_iter()
        .map(|pid| CpuMeter::start(Some(pid)))
        .collect::<Result<Vec<_>>>()?;
    let commits_before = server.database_commits().await?;
    let idle_watch = ThreadWatch::start(server_pid, o.idle_window + Duration::from_secs(30));
    let bench_cpu = CpuMeter::start(None)?;
    stats.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(o.idle_window).await;
    stats.recording.store(false, Ordering::Relaxed);
    let server_pct = server_cpu
        .iter()
        .map(CpuMeter::percent)
        .sum::<Result<f64>>()?;
    let commits_after = server.database_commits().await?;
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
    let replicas = server.bases.len();
    report.info(
        b,
        &if replicas > 1 {
            format!("server CPU over {window:.0} s idle, {replicas} replicas together")
        } else {
            format!("server CPU over {window:.0} s idle")
        },
        format!("{server_pct:.1}% of a core"),
    );
    if let (Some(before), Some(after)) = (commits_before, commits_after) {
        report.info(
            b,
            "  database transactions per second",
            format!("{:.0}", (after - before) as f64 / window),
        );
    }
    report.note(format!("{b}: server threads while idle: {idle_threads}"));
    report.info(
        b,
        "  polls/s, heartbeats/s answered",
        format!("{:.0}, {:.0}", polls as f64 / window, beats as f64 / window),
    );
    report.info(
        b,
        &format!(
            "  of which with no worker, over {:.0} s",
            EMPTY_WINDOW.as_secs_f64()
        ),
        format!("{empty_pct:.2}% of a core"),
    );
    if polls + beats > 0 {
        // What one idle request costs the server, and what 10,000 workers
        // asking at the same per-worker rate would need.
        let per_request =
            (server_pct - empty_pct).max(0.0) / 100.0 * window / (polls + beats) as f64;
        report.add(
            b,
            "  server CPU per poll or heartbeat",
            format!("{:.3} ms", per_request * 1000.0),
            "≤ 0.2 ms",
            Verdict::check(per_request <= 0.2e-3),
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
        let holder = match replicas {
            1 => "workers held by one control plane".to_string(),
            n => format!("workers held by {n} replicas together"),
        };
        report.add(b, &holder, value, "≥ 10,000", Verdict::check(held));
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
