//! One leased run, start to finish: workspace, environment, execution,
//! logs, timeouts, stop, and the final report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_wire::run::RunState;
use gantry_wire::worker::{FinishRun, Outcome, RunLease};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{with_retry, ControlPlane};
use crate::config::Config;
use crate::executor::{Executor, Exit, RunSpec, Running, Stopper, DEFAULT_PATH};
use crate::logs::{Masker, Spool, SpoolSink, UploadError, Uploader};
use crate::orphans::InFlightRuns;

/// What the agent tells a run in flight.
#[derive(Debug, Clone)]
pub enum Control {
    /// Stop it: TERM, then KILL after the grace period; it ends STOPPED.
    Stop(String),
    /// Kill it and report nothing: the lease is gone (fencing).
    Abandon,
}

const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

pub struct RunContext {
    pub config: Config,
    pub client: Arc<ControlPlane>,
    pub in_flight: InFlightRuns,
    pub executor: Executor,
    pub keeper: Arc<crate::register::SessionKeeper>,
}

/// The run's whole environment: what the run defines, the launcher's proxy
/// settings, and the variables named in GANTRY_PASSTHROUGH_ENVS. Nothing
/// else from the launcher (in particular not its token or key).
pub fn run_environment(
    config: &Config,
    lease: &RunLease,
    workspace: &std::path::Path,
    launcher_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert("HOME".to_string(), workspace.display().to_string());
    env.insert("GANTRY_RUN_ID".to_string(), lease.run_id.clone());
    env.insert(
        "GANTRY_WORKSPACE".to_string(),
        workspace.display().to_string(),
    );
    for name in PROXY_VARS
        .iter()
        .copied()
        .map(str::to_string)
        .chain(config.passthrough_envs.iter().cloned())
    {
        if let Some(value) = launcher_env.get(&name) {
            env.insert(name, value.clone());
        }
    }
    env.extend(lease.env.clone());
    env
}

pub(crate) struct Ending {
    pub(crate) outcome: Outcome,
    pub(crate) exit_code: Option<i32>,
    pub(crate) reason: Option<String>,
}

impl Ending {
    pub(crate) fn failed(reason: String) -> Ending {
        Ending {
            outcome: Outcome::Failed,
            exit_code: None,
            reason: Some(reason),
        }
    }

    pub(crate) fn stopped(reason: String) -> Ending {
        Ending {
            outcome: Outcome::Stopped,
            exit_code: None,
            reason: Some(reason),
        }
    }

    /// The end the command's exit decides, when nothing else decided it.
    pub(crate) fn of_exit(exit: Exit) -> Ending {
        match exit {
            Exit::Code(0) => Ending {
                outcome: Outcome::Succeeded,
                exit_code: Some(0),
                reason: None,
            },
            Exit::Code(code) => Ending {
                exit_code: Some(code),
                ..Ending::failed(format!("the command exited with code {code}"))
            },
            Exit::Signal(signal) => {
                Ending::failed(format!("the command was killed by signal {signal}"))
            }
            Exit::OutOfMemory(code) => Ending {
                exit_code: Some(code),
                ..Ending::failed(
                    "the run ran out of memory: the kernel killed its container at its memory limit \
                     (GANTRY_WORKER_MEMORY)"
                        .to_string(),
                )
            },
        }
    }
}

pub async fn execute(
    ctx: Arc<RunContext>,
    lease: RunLease,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let run_id = lease.run_id.clone();
    ctx.in_flight.remember(&lease, &ctx.keeper.worker_id());
    let (workspace, spool_path) = paths(&ctx.config, &lease);
    let result = execute_in(&ctx, &lease, &mut control, &workspace, &spool_path).await;
    match crate::recovery::unsaved_state(&workspace) {
        // Terraform's state that reached no control plane: never deleted.
        Some(path) => tracing::error!(
            run_id,
            path = %path.display(),
            "the run's workspace holds a Terraform state the control plane does not have; it is kept. \
             Push it with `terraform state push` from that directory once the stack is unlocked"
        ),
        None => {
            let _ = std::fs::remove_dir_all(&workspace);
        }
    }
    let _ = std::fs::remove_file(&spool_path);
    let _ = std::fs::remove_file(crate::logs::journal_path(&spool_path));
    ctx.in_flight.forget(&lease);
    match result {
        Ok(()) => {}
        Err(Abandoned) => tracing::warn!(
            run_id,
            "run abandoned: this worker no longer holds its lease"
        ),
    }
}

pub(crate) struct Abandoned;

/// Creates the run's workspace and its (empty) log spool.
pub(crate) fn prepare(workspace: &Path, spool_path: &Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(workspace)
        .and_then(|_| std::fs::create_dir_all(spool_path.parent().expect("spool has a parent")))
        .and_then(|_| std::fs::File::create(spool_path))
        .map_err(|error| {
            format!(
                "the launcher cannot prepare the workspace {}: {error}",
                workspace.display()
            )
        })
}

/// The run's workspace and log spool on this host. Keyed by lease: a plan
/// and an apply of one run never share either.
pub(crate) fn paths(config: &Config, lease: &RunLease) -> (PathBuf, PathBuf) {
    let key = crate::orphans::lease_key(lease);
    (
        config.work_dir.join("workspaces").join(&key),
        config.work_dir.join("logs").join(format!("{key}.log")),
    )
}

type Upload = (Uploader, Result<u64, UploadError>);

async fn execute_in(
    ctx: &RunContext,
    lease: &RunLease,
    control: &mut mpsc::UnboundedReceiver<Control>,
    workspace: &Path,
    spool_path: &Path,
) -> Result<(), Abandoned> {
    let run_id = lease.run_id.as_str();
    let config = &ctx.config;
    tracing::info!(run_id, command = ?lease.command, image = ?lease.image, "run started");
    if let Some(job) = &lease.stack {
        return crate::phases::execute(ctx, lease, job, control, workspace, spool_path).await;
    }

    let spool_file = match prepare(workspace, spool_path) {
        Ok(file) => file,
        Err(reason) => return finish(ctx, lease, 0, Ending::failed(reason)).await,
    };

    let report = with_retry(
        || {
            ctx.client
                .report_state(run_id, &lease.lease_id, RunState::Applying)
        },
        Duration::from_secs(60),
    )
    .await;
    if let Err(error) = report {
        if error.is_lease_lost() {
            return Err(Abandoned);
        }
        tracing::warn!(run_id, %error, "cannot report the run's phase; continuing");
    }

    let launcher_env: BTreeMap<String, String> = std::env::vars().collect();
    let run_workspace = ctx.executor.run_workspace(workspace);
    let env = run_environment(config, lease, &run_workspace, &launcher_env);
    let masker = Masker::new(
        config
            .mask_envs
            .iter()
            .filter_map(|name| Some((name.clone(), launcher_env.get(name)?.clone()))),
    );
    let spec = RunSpec {
        run_id: run_id.to_string(),
        lease_id: lease.lease_id.clone(),
        command: lease.command.clone(),
        env,
        workspace: workspace.to_path_buf(),
        image: lease.image.clone(),
    };

    let spool = Spool::new();
    let mut uploader = match Uploader::new(
        ctx.client.clone(),
        run_id,
        &lease.lease_id,
        spool_path,
        masker.clone(),
    ) {
        Ok(uploader) => uploader,
        Err(error) => {
            let reason = format!("the launcher cannot read its log spool: {error}");
            return finish(ctx, lease, 0, Ending::failed(reason)).await;
        }
    };
    let sink = SpoolSink::new(spool_file, spool.clone());
    masker.warn(run_id, &sink);
    let mut watch = Watch {
        deadline: Instant::now() + config.run_timeout,
        kill_at: None,
        ending: None,
        abandoned: false,
        upload: tokio::spawn({
            let spool = spool.clone();
            async move {
                let result = uploader.run(spool).await;
                (uploader, result)
            }
        }),
        uploaded: None,
    };

    // Starting can take a while (a container image to pull): stop requests,
    // a lost lease and the run timeout apply from here on.
    let started = tokio::select! {
        started = ctx.executor.start(&spec, &sink) => Some(started),
        done = &mut watch.upload => {
            watch.uploaded = Some(joined(done));
            watch.abandoned = true;
            None
        }
        Some(message) = control.recv() => {
            match message {
                Control::Stop(reason) => {
                    sink.line(&format!("{reason}; stopping the run"));
                    watch.ending = Some(Ending::stopped(reason));
                }
                Control::Abandon => watch.abandoned = true,
            }
            None
        }
        _ = tokio::time::sleep_until(watch.deadline) => {
            let reason = timeout_reason(config);
            sink.line(&reason);
            watch.ending = Some(Ending::failed(reason));
            None
        }
    };
    let exit = match started {
        Some(Ok(mut running)) => {
            let exit = watch.supervise(config, &mut running, control, &spool).await;
            running.finish_output().await;
            Some(exit)
        }
        Some(Err(reason)) => {
            sink.line(&reason);
            watch.ending = Some(Ending::failed(reason));
            None
        }
        None => None,
    };
    ctx.executor.cleanup(run_id, &lease.lease_id).await;
    // The last writer gone, the spool closes and the uploader sends the rest.
    drop(sink);
    let (uploader, result) = match watch.uploaded {
        Some(done) => done,
        None => joined(watch.upload.await),
    };
    if watch.abandoned {
        return Err(Abandoned);
    }
    let chunks = result.map_err(|UploadError::LeaseLost| Abandoned)?;
    let ending = match (watch.ending, exit) {
        (Some(ending), exit) => Ending {
            exit_code: ending.exit_code.or(match exit {
                Some(Exit::Code(code) | Exit::OutOfMemory(code)) => Some(code),
                _ => None,
            }),
            ..ending
        },
        (None, Some(exit)) => Ending::of_exit(exit),
        (None, None) => Ending::failed("the run ended before its command started".into()),
    };
    finish_with(ctx, lease, &uploader, chunks, ending).await
}

fn joined(done: Result<Upload, tokio::task::JoinError>) -> Upload {
    done.expect("the log uploader does not panic")
}

fn timeout_reason(config: &Config) -> String {
    format!(
        "the run timed out after {} (GANTRY_RUN_TIMEOUT)",
        humantime::format_duration(config.run_timeout)
    )
}

/// What ends a run besides its command: stop requests, the timeouts, a
/// lost lease (the uploader returns early only then).
struct Watch {
    deadline: Instant,
    /// When a terminated run is killed.
    kill_at: Option<Instant>,
    ending: Option<Ending>,
    abandoned: bool,
    upload: JoinHandle<Upload>,
    uploaded: Option<Upload>,
}

impl Watch {
    /// Watches a started run until its command exits.
    async fn supervise(
        &mut self,
        config: &Config,
        running: &mut Running,
        control: &mut mpsc::UnboundedReceiver<Control>,
        spool: &Spool,
    ) -> Exit {
        let stopper = running.stopper();
        let mut inactivity_check = tokio::time::interval(Duration::from_secs(1));
        let exit = loop {
            tokio::select! {
                exit = running.wait() => break exit,
                done = &mut self.upload, if self.uploaded.is_none() => {
                    self.uploaded = Some(joined(done));
                    self.abandoned = true;
                    stopper.kill();
                }
                Some(message) = control.recv() => match message {
                    Control::Stop(reason) => {
                        if self.ending.is_none() {
                            running.log_line(&format!("{reason}; stopping the run"));
                            self.end(&stopper, config, Ending::stopped(reason));
                        }
                    }
                    Control::Abandon => {
                        self.abandoned = true;
                        stopper.kill();
                    }
                },
                _ = tokio::time::sleep_until(self.deadline), if self.ending.is_none() => {
                    let reason = timeout_reason(config);
                    running.log_line(&reason);
                    self.end(&stopper, config, Ending::failed(reason));
                }
                _ = inactivity_check.tick(), if self.ending.is_none() => {
                    if spool.since_last_output() >= config.logs_timeout {
                        let reason = format!(
                            "the run printed nothing for {} (GANTRY_LOGS_TIMEOUT)",
                            humantime::format_duration(config.logs_timeout)
                        );
                        running.log_line(&reason);
                        self.end(&stopper, config, Ending::failed(reason));
                    }
                }
                _ = sleep_until_opt(self.kill_at) => {
                    stopper.kill();
                    self.kill_at = None;
                }
            }
        };
        // Whatever the command left in the background goes too: it would
        // hold the log open and outlive the run.
        stopper.kill_leftovers();
        exit
    }

    /// Ends the run for `ending`'s reason: TERM now, KILL after the grace.
    fn end(&mut self, stopper: &Stopper, config: &Config, ending: Ending) {
        self.ending = Some(ending);
        stopper.terminate();
        self.kill_at = Some(Instant::now() + config.stop_grace);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Finishes a run that produced no log.
async fn finish(
    ctx: &RunContext,
    lease: &RunLease,
    chunks: u64,
    ending: Ending,
) -> Result<(), Abandoned> {
    report_end(ctx, lease, None, chunks, ending).await
}

async fn finish_with(
    ctx: &RunContext,
    lease: &RunLease,
    uploader: &Uploader,
    chunks: u64,
    ending: Ending,
) -> Result<(), Abandoned> {
    report_end(ctx, lease, Some(uploader), chunks, ending).await
}

/// Reports the end, re-sending any chunk the control plane says it lacks
/// (e.g. it restarted and lost its last writes).
pub(crate) async fn report_end(
    ctx: &RunContext,
    lease: &RunLease,
    uploader: Option<&Uploader>,
    chunks: u64,
    ending: Ending,
) -> Result<(), Abandoned> {
    let request = FinishRun {
        lease_id: lease.lease_id.clone(),
        outcome: ending.outcome,
        exit_code: ending.exit_code,
        reason: ending.reason.clone(),
        log_chunks: chunks,
    };
    let mut delay = Duration::from_millis(100);
    let mut failures = crate::client::RetryLog::new("reporting the run's end");
    loop {
        match ctx.client.finish(&lease.run_id, &request).await {
            Ok(()) => {
                tracing::info!(run_id = %lease.run_id, outcome = ?ending.outcome, exit_code = ?ending.exit_code, "run finished");
                return Ok(());
            }
            Err(error) if error.is_lease_lost() => return Err(Abandoned),
            Err(crate::client::CallError::Api { body, .. })
                if body.error.code == "logs_incomplete" =>
            {
                let missing: Vec<u64> = body
                    .error
                    .details
                    .as_ref()
                    .and_then(|d| serde_json::from_value(d["missing"].clone()).ok())
                    .unwrap_or_default();
                tracing::warn!(run_id = %lease.run_id, missing = missing.len(), "control plane lacks log chunks; re-sending");
                if let Some(uploader) = uploader {
                    for seq in missing.into_iter().filter(|s| *s < chunks) {
                        uploader
                            .send(seq)
                            .await
                            .map_err(|UploadError::LeaseLost| Abandoned)?;
                    }
                }
            }
            Err(error) if error.is_permanent() => {
                tracing::error!(run_id = %lease.run_id, %error, "the control plane refused the run's end; giving up on it");
                return Err(Abandoned);
            }
            Err(error) => {
                failures.failed(&format!("run {}: {error}", lease.run_id));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
