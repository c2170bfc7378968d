//! Runs completed per second, beside the raw floor of spawning `true`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gantry_wire::run::{Run, RunState};

use super::{submit_many, Opts};
use crate::env::{idle_pool, Ctx, Server};
use crate::procs::kill_many;
use crate::report::{ms, Report};
use crate::stats::{summarize, wall_ms, CpuMeter};

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
    let (pool, launchers) = idle_pool(ctx, dir.path(), &server, "throughput", l).await?;
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
