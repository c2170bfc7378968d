//! One run printing 100 MiB of log, through a real launcher: how fast the
//! control plane stores it, and how far `gantry run logs -f` (the real CLI)
//! lags behind the printing. With replicas, the launcher talks to the last
//! and the follower to the first, so every chunk crosses replicas.
//!
//! The run's command is this binary (`--emit-log`): numbered lines, each
//! stamped with the time it was printed, so the follower can check that
//! the log is complete and in order, and measure each line's lag; the rest
//! of each line is random text, which no engine can compress much.
//!
//! Two runs: a flood (printed as fast as the pipe takes it), whose end is
//! the store's throughput; and one paced at the target rate, 50 MB/s, whose
//! lines measure the lag a person following a busy run sees.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use gantry_wire::run::RunState;

use super::Opts;
use crate::api::entered;
use crate::env::{idle_pool, Ctx, Server, ADMIN_TOKEN};
use crate::procs::{kill_many, Proc};
use crate::report::{ms, Report, Verdict};
use crate::stats::summarize;

/// Every line is this long, newline included.
const LINE: usize = 100;
/// The store must keep up with this (bytes per second)...
const TARGET_RATE: f64 = 50e6;
/// ...and a follower must stay this close (ms).
const TARGET_LAG_MS: f64 = 250.0;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Printable text that compresses about as badly as text can (xorshift
/// over 64 characters), so no engine is flattered by compressing the log.
struct Filler(u64);

impl Filler {
    fn next(&mut self) -> u8 {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ALPHABET[(self.0 >> 58) as usize]
    }
}

/// Prints `bytes` of lines `SEQ STAMP_US xxx…`, as fast as stdout takes
/// them, or at `rate` bytes per second. The command of this bench's runs.
pub fn emit(bytes: u64, rate: Option<f64>) -> std::io::Result<()> {
    const BATCH: usize = 64 * 1024 / LINE;
    let lines = bytes / LINE as u64;
    let mut out = std::io::stdout().lock();
    let mut buffer = Vec::with_capacity(BATCH * LINE);
    let started = Instant::now();
    let mut seq = 0u64;
    let mut filler = Filler(0x9e37_79b9_7f4a_7c15);
    while seq < lines {
        buffer.clear();
        for _ in 0..BATCH.min((lines - seq) as usize) {
            let start = buffer.len();
            write!(buffer, "{seq:010} {:016} ", now_us())?;
            while buffer.len() < start + LINE - 1 {
                buffer.push(filler.next());
            }
            buffer.push(b'\n');
            seq += 1;
        }
        out.write_all(&buffer)?;
        out.flush()?;
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64((seq * LINE as u64) as f64 / rate);
            if let Some(early) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(early);
            }
        }
    }
    Ok(())
}

/// What the follower saw.
struct Followed {
    lines: u64,
    /// Each line's lag behind its printing, ms.
    lags: Vec<f64>,
    first_stamp_ms: f64,
    last_stamp_ms: f64,
    last_received_ms: f64,
}

/// Reads the follower's stdout to its end, checking every line's number.
fn follow(stdout: std::process::ChildStdout, expected: u64) -> Result<Followed> {
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut line = String::with_capacity(LINE);
    let mut followed = Followed {
        lines: 0,
        lags: Vec::with_capacity(expected as usize),
        first_stamp_ms: 0.0,
        last_stamp_ms: 0.0,
        last_received_ms: 0.0,
    };
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(followed);
        }
        let received = now_us();
        let mut fields = line.split(' ');
        let (Some(seq), Some(stamp)) = (fields.next(), fields.next()) else {
            bail!("the follower printed a line that is not the run's: {line:?}");
        };
        let seq: u64 = seq.parse().context("a line's number")?;
        let stamp: u64 = stamp.parse().context("a line's time stamp")?;
        if seq != followed.lines || line.len() != LINE {
            bail!(
                "the log is not complete and in order: line {seq} ({} bytes) came after {} lines",
                line.len(),
                followed.lines
            );
        }
        if seq == 0 {
            followed.first_stamp_ms = stamp as f64 / 1000.0;
        }
        followed
            .lags
            .push(received.saturating_sub(stamp) as f64 / 1000.0);
        followed.last_stamp_ms = stamp as f64 / 1000.0;
        followed.last_received_ms = received as f64 / 1000.0;
        followed.lines += 1;
    }
}

/// 100 MiB printed by one run, on `ctx`'s engine.
pub async fn log_stream(ctx: &Ctx, o: &Opts, report: &mut Report) -> Result<()> {
    const B: &str = "100 MiB log";
    let dir = ctx.temp_dir("logs")?;
    let server = Server::start(ctx, dir.path(), "30s").await?;
    let (pool, launchers) = idle_pool(ctx, dir.path(), &server, "logs", 1).await?;
    let across = if server.bases.len() > 1 {
        "follower on another replica"
    } else {
        "follower"
    };
    let bytes = o.log_bytes - o.log_bytes % LINE as u64;
    let mb = bytes as f64 / 1e6;

    let flood = one_run(ctx, &server, &pool.id, dir.path(), "flood", bytes, None).await?;
    let printed_s = flood.printed_ms / 1000.0;
    let stored_s = flood.stored_ms / 1000.0;
    report.info(
        B,
        "flood: printed by the run in",
        format!("{} ({:.0} MB/s)", ms(flood.printed_ms), mb / printed_s),
    );
    let rate = mb / stored_s;
    report.add(
        B,
        "flood: stored, first line printed → run FINISHED",
        format!("{:.0} MB/s ({})", rate, ms(flood.stored_ms)),
        "≥ 50 MB/s",
        Verdict::check(rate * 1e6 >= TARGET_RATE),
    );
    report.info(
        B,
        &format!("flood: {across} done, after FINISHED"),
        ms(flood.follower_after_finish_ms),
    );

    let paced = one_run(
        ctx,
        &server,
        &pool.id,
        dir.path(),
        "paced",
        bytes,
        Some(TARGET_RATE),
    )
    .await?;
    let lags = summarize(&paced.lags);
    report.add(
        B,
        &format!("printed at 50 MB/s: {across} lags, p50 / p99"),
        format!("{} / {}", ms(lags.p50), ms(lags.p99)),
        "≤ 250 ms",
        Verdict::check(lags.p99 <= TARGET_LAG_MS),
    );
    report.info(
        B,
        "  worst line's lag",
        format!("{} (of {} lines)", ms(lags.max), lags.n),
    );
    kill_many(launchers);
    Ok(())
}

/// What one run's log did.
struct RunFigures {
    /// First line printed → last line printed.
    printed_ms: f64,
    /// First line printed → run FINISHED (every chunk stored: a finish is
    /// refused while one is missing).
    stored_ms: f64,
    follower_after_finish_ms: f64,
    lags: Vec<f64>,
}

async fn one_run(
    ctx: &Ctx,
    server: &Server,
    pool_id: &str,
    dir: &std::path::Path,
    name: &str,
    bytes: u64,
    rate: Option<f64>,
) -> Result<RunFigures> {
    let exe = std::env::current_exe().context("this benchmark's own path")?;
    let exe = exe.to_string_lossy().to_string();
    let bytes_arg = bytes.to_string();
    let mut command = vec![exe.as_str(), "--emit-log", bytes_arg.as_str()];
    let rate_arg = rate.map(|r| r.to_string());
    if let Some(rate) = &rate_arg {
        command.extend(["--emit-rate", rate.as_str()]);
    }
    let run = server.api.submit(pool_id, &command).await?;

    let mut cli = Command::new(ctx.bin_dir.join("gantry"));
    cli.args(["run", "logs", &run.id, "--follow"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "GANTRY_URL",
            server.bases[0].trim_end_matches(gantry_wire::API_PREFIX),
        )
        .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
        .env("NO_COLOR", "1");
    let (mut follower, stdout): (Proc, _) = Proc::spawn_piped(
        cli,
        format!("{name} follower"),
        &dir.join(format!("{name}-follower.log")),
    )?;
    let expected = bytes / LINE as u64;
    let reading = std::thread::spawn(move || follow(stdout, expected));

    let ended = server
        .api
        .wait_ended(
            &run.id,
            Duration::from_millis(200),
            Duration::from_secs(600),
        )
        .await?;
    if ended.state != RunState::Finished {
        bail!(
            "the {name} run ended {} ({}); its launcher's log: {}",
            ended.state,
            ended.reason.unwrap_or_default(),
            dir.join("launcher-0.log").display()
        );
    }
    let finished_ms = entered(&ended, RunState::Finished).context("the run's FINISHED time")?;
    let followed = tokio::task::spawn_blocking(move || reading.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the follower's reader panicked"))??;
    if followed.lines != expected {
        bail!(
            "the follower saw {} of {expected} lines; its stderr: {}",
            followed.lines,
            follower.log_tail(5)
        );
    }
    if let Some(status) = follower.exited().filter(|s| !s.success()) {
        bail!(
            "`gantry run logs -f` exited {status}: {}",
            follower.log_tail(5)
        );
    }
    Ok(RunFigures {
        printed_ms: followed.last_stamp_ms - followed.first_stamp_ms,
        stored_ms: finished_ms - followed.first_stamp_ms,
        follower_after_finish_ms: (followed.last_received_ms - finished_ms).max(0.0),
        lags: followed.lags,
    })
}
