//! The web UI's server time per page, with 1,000 runs and 100 workers (50
//! of them busy) and a run whose log is 100 MB: what each page costs the
//! server (its `Server-Timing`), and the run page's size (the tail, never
//! the whole log).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gantry_wire::worker::RunLease;

use super::{p50_p99, submit_many, Opts};
use crate::api::http_client;
use crate::env::{Ctx, Server, ADMIN_TOKEN};
use crate::report::{ms, Report, Verdict};
use crate::sim::{presign, register_with_retry, Worker};
use crate::stats::summarize;

const WORKERS: usize = 100;
const RUNS: usize = 1000;
const BUSY: usize = 50;
const LOG_MB: usize = 100;
/// The brief's target for any page.
const TARGET_MS: f64 = 50.0;

pub async fn ui_pages(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "ui";
    let dir = ctx.temp_dir("ui")?;
    // Long leases: the simulated workers hold theirs without heartbeats.
    let server = Server::start(ctx, dir.path(), "10m").await?;
    let pool = server.pool(ctx, "ui").await?;
    let url = server
        .api
        .base
        .trim_end_matches(gantry_wire::API_PREFIX)
        .to_string();
    let http = http_client(Duration::from_secs(60));

    eprintln!("  {WORKERS} workers, {RUNS} runs, a {LOG_MB} MB log…");
    let mut workers = Vec::with_capacity(WORKERS);
    for request in presign(&pool.credentials, WORKERS) {
        workers.push(Arc::new(
            register_with_retry(http.clone(), &server.api.base, &pool.credentials, request).await?,
        ));
    }
    server
        .api
        .create_git_stack("web", "ui", "https://git.example.invalid/infra.git")
        .await?;
    submit_many(&server.api, &pool.id, &["true"], RUNS, 8).await?;
    // Most runs end; BUSY workers keep one each; the rest stay READY.
    let mut held: Vec<(Arc<Worker>, RunLease)> = Vec::new();
    let to_finish = RUNS - BUSY - 50;
    let mut finished = 0;
    'finish: loop {
        for worker in &workers {
            let leases = worker
                .poll(1, 0)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for lease in leases.leases {
                if finished < to_finish {
                    worker
                        .finish_ok(&lease)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    finished += 1;
                } else {
                    held.push((worker.clone(), lease));
                    if held.len() == BUSY {
                        break 'finish;
                    }
                }
            }
        }
    }
    // The first held run gets a 100 MB log, in 1 MiB chunks of numbered lines.
    let (big_worker, big) = held[0].clone();
    let line_block: Vec<u8> = (0..16_384)
        .flat_map(|i| format!("\x1b[32mline\x1b[0m {i:>10} of a long log <>&\n").into_bytes())
        .collect();
    for seq in 0..LOG_MB as u64 {
        let mut chunk = line_block.clone();
        chunk.truncate(1 << 20);
        big_worker
            .put_log_chunk(&big.run_id, &big.lease_id, seq, chunk)
            .await
            .map_err(|e| anyhow::anyhow!("log chunk {seq}: {e}"))?;
    }
    let ready = server
        .api
        .runs(&pool.id, Some(gantry_wire::run::RunState::Ready))
        .await?;
    let Some(waiting) = ready.first() else {
        bail!("no READY run left to show");
    };
    let finished_run = server
        .api
        .runs(&pool.id, Some(gantry_wire::run::RunState::Finished))
        .await?;
    let middle = &finished_run[finished_run.len() / 2].id;

    // A browser's session.
    let browser = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = browser
        .post(format!("{url}/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .context("login set no cookie")?
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();

    let pages = [
        ("overview", "/".to_string()),
        ("runs", "/runs".to_string()),
        (
            "runs, filtered",
            "/runs?pool=ui&state=FINISHED&type=task".to_string(),
        ),
        ("runs, a later page", format!("/runs?before={middle}")),
        ("pool (100 workers)", "/pools/ui".to_string()),
        ("run, 100 MB log (tail)", format!("/runs/{}", big.run_id)),
        (
            "run, older log lines",
            format!("/runs/{}/log?before=50", big.run_id),
        ),
        ("run, waiting (why)", format!("/runs/{}", waiting.id)),
        ("stacks", "/stacks".to_string()),
        ("stack", "/stacks/web".to_string()),
        ("tokens", "/tokens".to_string()),
    ];
    let samples = if o.dispatch_samples < 100 { 30 } else { 100 };
    for (name, path) in pages {
        let mut server_ms = Vec::with_capacity(samples);
        let mut total_ms = Vec::with_capacity(samples);
        let mut bytes = 0;
        for _ in 0..samples {
            let started = Instant::now();
            let response = browser
                .get(format!("{url}{path}"))
                .header(reqwest::header::COOKIE, &cookie)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("GET {path}: HTTP {}", response.status());
            }
            let timing = response
                .headers()
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("app;dur="))
                .and_then(|v| v.parse::<f64>().ok())
                .context("no Server-Timing header")?;
            bytes = response.bytes().await?.len();
            total_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            server_ms.push(timing);
        }
        let server = summarize(&server_ms);
        report.add(
            B,
            &format!("{name}: server p50 / p99"),
            p50_p99(&server),
            "p99 ≤ 50 ms",
            Verdict::check(server.p99 <= TARGET_MS),
        );
        report.info(
            B,
            &format!("{name}: client p50, page size"),
            format!("{}, {} KB", ms(summarize(&total_ms).p50), bytes / 1024),
        );
    }
    drop(held);
    Ok(())
}
