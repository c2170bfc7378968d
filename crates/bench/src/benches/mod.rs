//! The benchmarks, one module each. Each builds its own world (temp dir,
//! server, pool, launchers), measures, adds rows to the report, and tears it
//! all down. What more than one of them needs lives here.

mod burst;
mod dispatch;
mod idle;
mod logs;
mod peer;
mod rss;
mod throughput;
mod ui;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::api::Api;
use crate::report::ms;
use crate::stats::Summary;

pub use burst::burst;
pub use dispatch::{dispatch_launchers, dispatch_protocol};
pub use idle::idle_workers;
pub use logs::{emit as emit_log, log_stream};
pub use peer::peer;
pub use rss::launcher_rss;
pub use throughput::throughput;
pub use ui::ui_pages;

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
    pub log_bytes: u64,
    pub rss_settle: Duration,
    pub idle_workers: Vec<usize>,
    pub idle_settle: Duration,
    pub idle_window: Duration,
    pub idle_registration_limit: Duration,
    pub peer_samples: usize,
    pub peer_workers: usize,
    pub peer_burst: usize,
    pub peer_jitter: Duration,
}

fn p50_p99(s: &Summary) -> String {
    format!("{} / {}", ms(s.p50), ms(s.p99))
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
