//! The Gantry half of `make bench-peers` (scripts/bench-peers.sh), which
//! puts the same figures beside Prefect's: pickup latency, a burst of runs
//! on a few workers, idle worker memory. Every figure also goes into the
//! report's machine-readable `figures` (`--json`), under the names
//! scripts/bench-peers/prefect.py uses for Prefect.
//!
//! Every latency is between two timestamps the control plane recorded in
//! the run's transitions: the first (QUEUED, the run's insertion) and the
//! one that marks the step, so the harness's own polling never counts.
//! Prefect's driver measures from its run's SCHEDULED state in the same way.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use gantry_wire::run::{Run, RunState};
use rand::Rng;

use super::{submit_many, Opts};
use crate::api::{entered, Api};
use crate::env::{spawn_launchers, wait_idle, Ctx, LauncherOpts, Pool, Server};
use crate::procs::{kill_many, Proc};
use crate::report::{mb, ms, Report};
use crate::stats::{rfc3339_ms, summarize, tree_rss_kb};

/// The trivial run, as in the other benchmarks: Prefect's is a flow that does nothing.
const TRIVIAL: &[&str] = &["true"];

/// Milliseconds from the run's first transition (its insertion) to its first
/// entry into `state`, both recorded by the control plane.
fn since_inserted(run: &Run, state: RunState) -> Option<f64> {
    let inserted = rfc3339_ms(&run.transitions.first()?.at).ok()?;
    Some(entered(run, state)? - inserted)
}

fn inserted(run: &Run) -> Option<f64> {
    rfc3339_ms(&run.transitions.first()?.at).ok()
}

fn ended(run: &Run) -> Option<f64> {
    if !run.state.is_terminal() {
        return None;
    }
    rfc3339_ms(&run.transitions.last()?.at).ok()
}

/// The median resident memory of the launchers' process trees, in kB.
fn median_rss_kb(launchers: &[Proc]) -> Result<f64> {
    let rss = launchers
        .iter()
        .map(|l| tree_rss_kb(l.pid()).map(|kb| kb as f64))
        .collect::<Result<Vec<_>>>()?;
    Ok(summarize(&rss).p50)
}

/// Waits until every run in `ids` has ended, polling the pool's run list.
async fn wait_all_ended(
    api: &Api,
    pool: &Pool,
    ids: &[String],
    limit: Duration,
) -> Result<Vec<Run>> {
    let wanted: HashSet<&String> = ids.iter().collect();
    let deadline = Instant::now() + limit;
    loop {
        let runs: Vec<Run> = api
            .runs(&pool.id, None)
            .await?
            .into_iter()
            .filter(|r| wanted.contains(&r.id))
            .collect();
        let done = runs.iter().filter(|r| r.state.is_terminal()).count();
        if done == ids.len() {
            return Ok(runs);
        }
        if Instant::now() >= deadline {
            bail!("only {done} of {} runs ended within {limit:?}", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The figures `make bench-peers` compares: one server, `o.peer_workers`
/// launchers running one run at a time (a Prefect worker with `--limit 1`).
pub async fn peer(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "peer figures";
    let workers = o.peer_workers.max(1);
    let dir = ctx.temp_dir("peer")?;
    let server = Server::start(ctx, dir.path(), "30s").await?;
    let pool = server.pool(ctx, "peer").await?;
    let mut launchers =
        spawn_launchers(ctx, dir.path(), &pool, 0, workers, LauncherOpts::default())?;
    wait_idle(
        &server.api,
        &pool,
        &mut launchers,
        workers,
        Duration::from_secs(60),
    )
    .await?;
    tokio::time::sleep(o.rss_settle).await;

    let fresh = median_rss_kb(&launchers)?;
    report.info(
        B,
        &format!("idle worker RSS, median of {workers}, fresh"),
        mb(fresh as u64),
    );
    report.figure("idle_worker_rss_kb", fresh);

    // Pickup latency: one run at a time on an idle pool. A random pause before
    // each submission, the same as the Prefect driver's, so no sample lines up
    // with a worker's rhythm.
    let (mut pickup, mut start, mut done) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed = 0;
    for _ in 0..o.peer_samples {
        let pause = rand::thread_rng().gen_range(0.0..o.peer_jitter.as_secs_f64());
        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        let run = server.api.submit(&pool.id, TRIVIAL).await?;
        let run = server
            .api
            .wait_ended(&run.id, Duration::from_millis(20), Duration::from_secs(60))
            .await?;
        if run.state != RunState::Finished {
            failed += 1;
        }
        pickup.extend(since_inserted(&run, RunState::Preparing));
        start.extend(since_inserted(&run, RunState::Applying));
        done.extend(ended(&run).zip(inserted(&run)).map(|(e, i)| e - i));
    }
    let (pickup, start, done) = (summarize(&pickup), summarize(&start), summarize(&done));
    for (name, key, s) in [
        ("pickup (QUEUED → PREPARING)", "pickup", &pickup),
        ("started (QUEUED → APPLYING)", "start", &start),
        ("ended (QUEUED → FINISHED)", "done", &done),
    ] {
        report.info(
            B,
            &format!("{name}, p50 / p90 of {}", s.n),
            format!("{} / {}", ms(s.p50), ms(s.p90)),
        );
        report.figure(&format!("{key}_p50_ms"), s.p50);
        report.figure(&format!("{key}_p90_ms"), s.p90);
    }
    report.figure("samples", pickup.n as f64);

    // The burst: all runs submitted at once, then until the last one ended.
    let n = o.peer_burst;
    let ids = submit_many(&server.api, &pool.id, TRIVIAL, n, 8).await?;
    let runs = wait_all_ended(&server.api, &pool, &ids, Duration::from_secs(300)).await?;
    failed += runs
        .iter()
        .filter(|r| r.state != RunState::Finished)
        .count();
    let first = runs
        .iter()
        .filter_map(inserted)
        .fold(f64::INFINITY, f64::min);
    let last =
        |at: &dyn Fn(&Run) -> Option<f64>| runs.iter().filter_map(at).fold(first, f64::max) - first;
    let picked_up = last(&|r| entered(r, RunState::Preparing));
    let started = last(&|r| entered(r, RunState::Applying));
    let all_done = last(&ended);
    let used: HashSet<_> = runs.iter().filter_map(|r| r.worker_id.clone()).collect();
    for (name, key, value) in [
        ("all picked up", "burst_picked_up_ms", picked_up),
        ("all started", "burst_started_ms", started),
        ("all ended", "burst_done_ms", all_done),
    ] {
        report.info(
            B,
            &format!("{n} runs on {workers} workers: {name}"),
            ms(value),
        );
        report.figure(key, value);
    }
    report.info(B, "  workers used", format!("{} of {workers}", used.len()));
    report.figure("burst_runs", n as f64);
    report.figure("workers", workers as f64);

    tokio::time::sleep(o.rss_settle).await;
    let after = median_rss_kb(&launchers)?;
    report.info(
        B,
        "idle worker RSS, median, after the runs",
        mb(after as u64),
    );
    report.figure("idle_worker_rss_after_kb", after);
    let server_rss = tree_rss_kb(server.proc.pid())?;
    report.info(B, "control plane RSS, after the runs", mb(server_rss));
    report.figure("server_rss_kb", server_rss as f64);
    report.figure("failed_runs", failed as f64);
    // The bench's client retries nothing: any refused call fails the benchmark.
    report.figure("busy_answers", 0.0);
    if failed > 0 {
        report.note(format!("{B}: {failed} runs did not end FINISHED"));
    }
    kill_many(launchers);
    Ok(())
}
