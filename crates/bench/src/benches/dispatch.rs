//! Dispatch latency on an idle pool: with real launchers (from the run's
//! recorded transitions) and at the protocol level (simulated pollers that
//! timestamp the lease's arrival themselves).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gantry_wire::run::RunState;
use tokio::sync::mpsc;

use super::{p50_p99, Opts};
use crate::api::{entered, http_client};
use crate::env::{spawn_launchers, wait_idle, Ctx, LauncherOpts, Server};
use crate::procs::kill_many;
use crate::report::{ms, Report, Verdict};
use crate::sim;
use crate::stats::{summarize, wall_ms, Summary};

const DISPATCH_TARGET: &str = "p50 ≤ 10 ms, p99 ≤ 50 ms";

fn dispatch_verdict(s: &Summary) -> Verdict {
    Verdict::check(s.n > 0 && s.p50 <= 10.0 && s.p99 <= 50.0)
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
                &server.pool_api.base,
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
