//! An idle launcher's resident memory.

use std::time::Duration;

use anyhow::Result;

use super::Opts;
use crate::env::{idle_pool, Ctx, Server};
use crate::procs::kill_many;
use crate::report::{mb, Report, Verdict};
use crate::stats::proc_status;

/// One real launcher, registered and idle: its resident memory.
pub async fn launcher_rss(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "idle launcher";
    let dir = ctx.temp_dir("rss")?;
    let server = Server::start(ctx, dir.path(), "30s").await?;
    let (pool, launchers) = idle_pool(ctx, dir.path(), &server, "rss", 1).await?;
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
