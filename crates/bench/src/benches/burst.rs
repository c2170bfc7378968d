//! A burst of runs on as many idle launchers, warm and cold.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use gantry_wire::run::{Run, RunState};

use super::{submit_many, Opts};
use crate::api::{entered, left_ready, Api};
use crate::env::{spawn_launchers, wait_idle, Ctx, LauncherOpts, Pool, Server};
use crate::procs::kill_many;
use crate::report::{mb, ms, Report, Verdict};
use crate::stats::{proc_status, summarize, wall_ms};

/// Waits until `count` runs of the pool have entered APPLYING (or ended),
/// polling the pool's run list.
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
        // Replicas relay each wake-up through PostgreSQL: the scale-out
        // target allows them half a second more.
        let (target, limit_ms) = if server.bases.len() > 1 {
            ("≤ 1.5 s", 1500.0)
        } else {
            ("≤ 1 s", 1000.0)
        };
        report.add(
            B,
            &format!("{n} runs on {n} idle launchers: all APPLYING"),
            ms(started),
            target,
            Verdict::check(started <= limit_ms),
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
