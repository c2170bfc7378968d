//! A run on a stack, phase by phase: PREPARING (the source), INITIALIZING
//! (`init` against the control plane's state backend), PLANNING (`plan
//! -out=plan.bin`, summarised from `show -json`), then by run type: done
//! (proposed), the workspace sealed to the pool's key and UNCONFIRMED
//! (tracked), or APPLYING that very plan (destroy; a confirmed tracked run,
//! which starts from the sealed workspace, and first checks that the state
//! is still the one the plan was made against). Hooks run around init, plan
//! and apply. A stack that pins its tool's version gets exactly that version
//! (see `tool`), or the run fails before init. Each command runs through the
//! configured executor; its output, masked, goes to the run's one log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_wire::run::{RunState, RunType};
use gantry_wire::stack::{JobPhase, ReportPlan, StackJob};
use gantry_wire::worker::{Outcome, RunLease};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::with_retry;
use crate::executor::{Exit, RunSpec};
use crate::git::{self, Git};
use crate::logs::{Masker, Spool, SpoolSink, UploadError, Uploader};
use crate::planfile;
use crate::run::{report_end, run_environment, Abandoned, Control, Ending, RunContext};
use crate::tool::{self, Resolved};
use crate::workspace;

mod apply;

type Upload = (Uploader, Result<u64, UploadError>);

/// Why the phases stopped early.
enum Halt {
    End(Ending),
    Abandoned,
}

impl From<String> for Halt {
    fn from(reason: String) -> Halt {
        Halt::End(Ending::failed(reason))
    }
}

struct Phases<'a> {
    ctx: &'a RunContext,
    lease: &'a RunLease,
    job: &'a StackJob,
    control: &'a mut mpsc::UnboundedReceiver<Control>,
    sink: SpoolSink,
    env: BTreeMap<String, String>,
    /// The root module, on this host.
    root: PathBuf,
    /// The tool binary the run uses.
    tool: Resolved,
    /// The run's raw log (before masking), to read what a failed step said.
    spool_path: PathBuf,
    deadline: Instant,
    upload: Option<JoinHandle<Upload>>,
    /// The apply step runs: nothing but a stop, the run timeout or a second
    /// SIGTERM may end it. A lost lease or an unreachable control plane lets
    /// it run to its end, so that Terraform saves what it did.
    protected: bool,
    /// The control plane said this worker no longer holds the run while the
    /// apply was protected.
    lease_lost: bool,
}

pub(crate) async fn execute(
    ctx: &RunContext,
    lease: &RunLease,
    job: &StackJob,
    control: &mut mpsc::UnboundedReceiver<Control>,
    workspace: &Path,
    spool_path: &Path,
) -> Result<(), Abandoned> {
    let spool_file = match crate::run::prepare(workspace, spool_path) {
        Ok(file) => file,
        Err(reason) => return report_end(ctx, lease, None, 0, Ending::failed(reason)).await,
    };
    let launcher_env: BTreeMap<String, String> = std::env::vars().collect();
    let secrets = workspace::secrets(job, &ctx.config.private_key);
    let masker = Masker::new(masked_values(
        &ctx.config,
        &launcher_env,
        job,
        secrets.as_deref().unwrap_or_default(),
    ));
    let spool = Spool::new();
    let mut uploader = match Uploader::new(
        ctx.client.clone(),
        &lease.run_id,
        &lease.lease_id,
        spool_path,
        masker.clone(),
    ) {
        Ok(uploader) => uploader,
        Err(error) => {
            let reason = format!("the launcher cannot read its log spool: {error}");
            return report_end(ctx, lease, None, 0, Ending::failed(reason)).await;
        }
    };
    let sink = SpoolSink::new(spool_file, spool.clone());
    masker.warn(&lease.run_id, &sink);
    let upload = tokio::spawn({
        let spool = spool.clone();
        async move {
            let result = uploader.run(spool).await;
            (uploader, result)
        }
    });
    let source = workspace.join("source");
    let run_workspace = ctx.executor.run_workspace(workspace);
    let mut env = run_environment(&ctx.config, lease, &run_workspace, &launcher_env);
    for (name, value) in [
        ("TF_IN_AUTOMATION", "1"),
        ("TF_INPUT", "0"),
        ("CHECKPOINT_DISABLE", "1"),
        ("TF_HTTP_USERNAME", job.state_username.as_str()),
        ("TF_HTTP_PASSWORD", job.state_password.as_str()),
    ] {
        env.insert(name.to_string(), value.to_string());
    }
    // Terraform rides out a control-plane outage of a few minutes on its
    // own (connection errors and 5xx are retried); past that it leaves
    // errored.tfstate, which the launcher uploads (`recovery`). A stack may
    // set other retries.
    for (name, value) in [
        ("TF_HTTP_RETRY_MAX", "30"),
        ("TF_HTTP_RETRY_WAIT_MIN", "1"),
        ("TF_HTTP_RETRY_WAIT_MAX", "10"),
    ] {
        env.entry(name.to_string())
            .or_insert_with(|| value.to_string());
    }
    let mut phases = Phases {
        ctx,
        lease,
        job,
        control,
        sink,
        env,
        root: source.join(&job.project_root),
        tool: tool::resolve(job, ctx.config.tools_dir.as_deref()),
        spool_path: spool_path.to_path_buf(),
        deadline: Instant::now() + ctx.config.run_timeout,
        upload: Some(upload),
        protected: false,
        lease_lost: false,
    };
    let halt = match secrets {
        Ok(secrets) => {
            phases.env.extend(secrets);
            match job.phase {
                JobPhase::Plan => phases.plan_phase(&source).await,
                JobPhase::Apply => phases.apply_phase(&source).await,
            }
        }
        Err(reason) => Err(Halt::from(reason)),
    };
    let abandoned = matches!(halt, Err(Halt::Abandoned));
    let ending = match halt {
        Ok(ending) | Err(Halt::End(ending)) => ending,
        Err(Halt::Abandoned) => Ending::failed("abandoned".into()),
    };
    if let Some(reason) = ending
        .reason
        .as_deref()
        .filter(|_| ending.outcome == Outcome::Failed)
    {
        phases.sink.line(reason);
    }
    ctx.executor.cleanup(&lease.run_id, &lease.lease_id).await;
    let Phases { sink, upload, .. } = phases;
    drop(sink);
    let Some(upload) = upload.filter(|_| !abandoned) else {
        return Err(Abandoned);
    };
    let (uploader, result) = upload.await.expect("the log uploader does not panic");
    let chunks = result.map_err(|UploadError::LeaseLost| Abandoned)?;
    report_end(ctx, lease, Some(&uploader), chunks, ending).await
}

/// What a stack run's log must never show, by name: the launcher's
/// GANTRY_MASK_ENVS, the run's state credential, the stack's secret
/// variables (`secrets`, opened) and credentials in its git URL.
pub(crate) fn masked_values(
    config: &crate::config::Config,
    launcher_env: &BTreeMap<String, String>,
    job: &StackJob,
    secrets: &[(String, String)],
) -> Vec<(String, String)> {
    let mut masked: Vec<(String, String)> = config
        .mask_envs
        .iter()
        .filter_map(|name| Some((name.clone(), launcher_env.get(name)?.clone())))
        .collect();
    masked.push(("TF_HTTP_PASSWORD".into(), job.state_password.clone()));
    masked.extend(secrets.iter().cloned());
    for credential in job.git_url.iter().flat_map(|url| git::url_secrets(url)) {
        masked.push(("in the git URL".into(), credential));
    }
    masked
}

impl Phases<'_> {
    async fn report(&self, state: RunState) -> Result<(), Halt> {
        let (client, run_id, lease_id) =
            (&self.ctx.client, &self.lease.run_id, &self.lease.lease_id);
        if state == RunState::Applying {
            return self.enter_apply().await;
        }
        match with_retry(
            || client.report_state(run_id, lease_id, state),
            Duration::from_secs(60),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(error) if error.is_lease_lost() => Err(Halt::Abandoned),
            Err(error) => {
                tracing::warn!(run_id = %run_id, %error, "cannot report the run's phase; continuing");
                Ok(())
            }
        }
    }

    async fn report_plan(&self, report: ReportPlan) -> Result<(), Halt> {
        let path = format!("/worker/runs/{}/plan", self.lease.run_id);
        let response = self
            .ctx
            .client
            .request(reqwest::Method::POST, &path, Duration::from_secs(30))
            .json(&ReportPlan {
                lease_id: self.lease.lease_id.clone(),
                ..report
            })
            .send()
            .await;
        match response {
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => Err(Halt::Abandoned),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(run_id = %self.lease.run_id, %error, "cannot report the plan");
                Ok(())
            }
        }
    }

    fn tool(&self) -> String {
        self.tool.program.clone()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.spool_path).map_or(0, |m| m.len())
    }

    /// What the run printed since `offset` of its log (at most the last 256 KiB).
    fn output_since(&self, offset: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let offset = offset.max(self.log_len().saturating_sub(256 * 1024));
        let mut text = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.spool_path) {
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = file.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// With a pinned version, checks that the tool the run will use is that
    /// version (`<tool> version -json`); `phase` names where a mismatch fails.
    async fn check_tool_version(&mut self, phase: &str) -> Result<(), Halt> {
        let Some(wanted) = self.job.tool_version.clone() else {
            return Ok(());
        };
        let tool = self.job.tool.as_str();
        self.sink.line(&format!(
            "{tool} {wanted} pinned; using {}",
            self.tool.origin
        ));
        let json = match self
            .capture("tool version", "version -json", ".gantry-tool-version.json")
            .await
        {
            Ok(json) => json,
            Err(Halt::End(mut ending)) if ending.outcome == Outcome::Failed => {
                ending.reason = Some(format!(
                    "{phase}: the stack pins {tool} {wanted}, and `{} version -json` failed on this worker ({}); \
                     put {tool} {wanted} at GANTRY_TOOLS_DIR/{tool}/{wanted}/{} on the worker or use a runner image that has it",
                    self.tool.program,
                    ending.reason.unwrap_or_default(),
                    self.job.tool.program()
                ));
                return Err(Halt::End(ending));
            }
            Err(other) => return Err(other),
        };
        let found = tool::reported_version(&json).map_err(|e| {
            format!(
                "{phase}: the stack pins {tool} {wanted}, but {} is not a tool this launcher can check: {e}",
                self.tool.program
            )
        })?;
        if let Some(why) = tool::mismatch(self.job, &self.tool, &found) {
            return Err(Halt::from(format!("{phase}: {why}")));
        }
        self.sink.line(&format!("{tool} {found}, as pinned"));
        Ok(())
    }

    fn backend_flags(&self) -> Vec<String> {
        let address = &self.job.state_address;
        vec![
            format!("-backend-config=address={address}"),
            format!("-backend-config=lock_address={address}"),
            format!("-backend-config=unlock_address={address}"),
        ]
    }

    /// Runs one command in the root module; a non-zero exit ends the run.
    async fn step(&mut self, what: &str, command: Vec<String>) -> Result<(), Halt> {
        self.sink.line(&format!("{what}: {}", command.join(" ")));
        let log_start = self.log_len();
        let spec = RunSpec {
            run_id: self.lease.run_id.clone(),
            lease_id: self.lease.lease_id.clone(),
            command,
            env: self.env.clone(),
            workspace: self.root.clone(),
            image: self.lease.image.clone(),
        };
        let mut running = self
            .ctx
            .executor
            .start(&spec, &self.sink)
            .await
            .map_err(Halt::from)?;
        let stopper = running.stopper();
        let mut kill_at: Option<Instant> = None;
        let mut ending: Option<Ending> = None;
        let exit = loop {
            let protected = self.protected;
            let upload = async {
                match self.upload.as_mut() {
                    Some(upload) => {
                        let _ = upload.await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                exit = running.wait() => break exit,
                _ = upload => {
                    // The uploader only stops early when the lease is lost.
                    self.upload = None;
                    if protected {
                        self.lease_lost = true;
                        running.log_line("the control plane says this worker no longer holds the run; the apply goes on to its end, so that what it did is saved");
                        continue;
                    }
                    stopper.kill();
                    running.finish_output().await;
                    return Err(Halt::Abandoned);
                }
                Some(message) = self.control.recv() => match message {
                    Control::Stop(reason) => {
                        if ending.is_none() {
                            running.log_line(&format!("{reason}; stopping the run"));
                            stopper.terminate();
                            kill_at = Some(Instant::now() + self.ctx.config.stop_grace);
                            ending = Some(Ending::stopped(reason));
                        }
                    }
                    Control::Abandon if self.protected => {
                        if !self.lease_lost {
                            self.lease_lost = true;
                            running.log_line("the control plane says this worker no longer holds the run; the apply goes on to its end, so that what it did is saved");
                        }
                    }
                    Control::Abandon => {
                        stopper.kill();
                        running.finish_output().await;
                        return Err(Halt::Abandoned);
                    }
                },
                _ = tokio::time::sleep_until(self.deadline), if ending.is_none() => {
                    let reason = format!("the run timed out after {} (GANTRY_RUN_TIMEOUT)", humantime::format_duration(self.ctx.config.run_timeout));
                    stopper.terminate();
                    kill_at = Some(Instant::now() + self.ctx.config.stop_grace);
                    ending = Some(Ending::failed(reason));
                }
                _ = async { tokio::time::sleep_until(kill_at.unwrap_or(self.deadline)).await }, if kill_at.is_some() => {
                    stopper.kill();
                    kill_at = None;
                }
            }
        };
        stopper.kill_leftovers();
        running.finish_output().await;
        if let Some(ending) = ending {
            return Err(Halt::End(ending));
        }
        match exit {
            Exit::Code(0) => Ok(()),
            other => {
                let mut end = Ending::of_exit(other);
                let exit = end.reason.unwrap_or_default();
                let output = self.output_since(log_start);
                end.reason = Some(if let Some(holder) = planfile::lock_holder(&output) {
                    let holder = if holder.is_empty() {
                        holder
                    } else {
                        format!(" ({holder})")
                    };
                    format!(
                        "{what} failed: the stack's state is locked by someone else{holder}, so Terraform could not lock it; \
                         nothing was changed: wait for the holder to unlock it, or unlock it (gantry stack state unlock), then trigger the run again"
                    )
                } else if planfile::terraform_said_stale(&output) {
                    format!(
                        "{what} failed: the saved plan is stale: the stack's state changed since the plan, and Terraform refused to apply it; \
                         nothing was applied: trigger a new run to plan against the current state"
                    )
                } else {
                    format!("{what} failed: {exit}")
                });
                Err(Halt::End(end))
            }
        }
    }

    async fn hooks(&mut self, name: &str) -> Result<(), Halt> {
        let commands = self.job.hooks.get(name).cloned().unwrap_or_default();
        for command in commands {
            self.step(
                &format!("hook {name}"),
                vec!["sh".into(), "-c".into(), command],
            )
            .await?;
        }
        Ok(())
    }

    async fn init(&mut self) -> Result<(), Halt> {
        workspace::write_new(
            &self.root,
            workspace::BACKEND_OVERRIDE,
            b"terraform {\n  backend \"http\" {}\n}\n",
        )
        .map_err(|e| format!("cannot write {}: {e}", workspace::BACKEND_OVERRIDE))?;
        self.hooks("before_init").await?;
        let mut command = vec![
            self.tool(),
            "init".into(),
            "-input=false".into(),
            "-no-color".into(),
        ];
        command.extend(self.backend_flags());
        self.step("init", command).await?;
        self.hooks("after_init").await
    }

    /// Runs the tool with stdout into a file of the root module, and reads it.
    async fn capture(&mut self, what: &str, args: &str, file: &str) -> Result<Vec<u8>, Halt> {
        // Not through a link the source may have put there.
        let _ = std::fs::remove_file(self.root.join(file));
        let script = format!("\"$0\" {args} > {file}");
        self.step(what, vec!["sh".into(), "-c".into(), script, self.tool()])
            .await?;
        let path = self.root.join(file);
        let data = std::fs::read(&path).map_err(|e| format!("{what}: cannot read {file}: {e}"))?;
        let _ = std::fs::remove_file(&path);
        Ok(data)
    }

    async fn plan_phase(&mut self, source: &Path) -> Result<Ending, Halt> {
        let mut commit_sha = None;
        if let Some(url) = &self.job.git_url {
            let git_ref = self.job.git_ref.clone().unwrap_or_else(|| "HEAD".into());
            let config = &self.ctx.config;
            let git = Git::new(
                &std::env::vars().collect(),
                &config.passthrough_envs,
                config.allow_local_git_sources,
                self.ctx.executor.host_ca_file(),
                url,
            );
            commit_sha = Some(git.clone(&self.sink, url, &git_ref, source).await?);
        } else {
            let path = format!("/worker/runs/{}/source", self.lease.run_id);
            let archive = workspace::fetch(&self.ctx.client, &path, &self.lease.lease_id).await?;
            workspace::unpack(&archive, source)
                .map_err(|e| format!("PREPARING: cannot unpack the uploaded directory: {e}"))?;
        }
        if commit_sha.is_some() {
            self.report_plan(ReportPlan {
                commit_sha,
                ..ReportPlan::default()
            })
            .await?;
        }
        self.root = workspace::resolve_root(source, &self.job.project_root)?;
        self.check_tool_version("PREPARING").await?;
        self.report(RunState::Initializing).await?;
        self.init().await?;
        if self.lease.run_type == RunType::Task {
            self.report(RunState::Applying).await?;
            let command = self.lease.command.clone();
            self.step("task", command).await?;
            return Ok(Ending::of_exit(Exit::Code(0)));
        }
        self.report(RunState::Planning).await?;
        self.hooks("before_plan").await?;
        let mut plan = vec![
            self.tool(),
            "plan".into(),
            "-input=false".into(),
            "-no-color".into(),
            "-out=plan.bin".into(),
        ];
        if self.lease.run_type == RunType::Destroy {
            plan.push("-destroy".into());
        }
        if self.lease.run_type == RunType::Proposed {
            // A proposed run's state credential is read-only (GET): it must
            // not take the lock, which would also let it learn and release
            // another holder's lock. A plan writes nothing, so needs none.
            plan.push("-lock=false".into());
        }
        self.step("plan", plan).await?;
        let json = self
            .capture("show", "show -json -no-color plan.bin", ".gantry-plan.json")
            .await?;
        let summary = workspace::plan_summary(&json)?;
        self.sink.line(&format!("plan: {summary}"));
        let has_changes = summary.has_changes();
        self.report_plan(ReportPlan {
            plan: Some(summary),
            ..ReportPlan::default()
        })
        .await?;
        self.hooks("after_plan").await?;
        match self.lease.run_type {
            RunType::Proposed | RunType::Task => Ok(Ending::of_exit(Exit::Code(0))),
            RunType::Tracked | RunType::Destroy if !has_changes => {
                self.sink.line("no changes: nothing to confirm");
                Ok(Ending::of_exit(Exit::Code(0)))
            }
            RunType::Tracked | RunType::Destroy if self.job.auto_apply => {
                self.sink
                    .line("the stack applies without confirmation (auto-apply)");
                self.report(RunState::Applying).await?;
                self.apply().await
            }
            RunType::Tracked | RunType::Destroy => {
                let packed = workspace::pack(source)
                    .map_err(|e| format!("cannot pack the workspace: {e}"))?;
                let sealed = workspace::seal(&self.ctx.config.private_key.public_key(), &packed)?;
                let path = format!("/worker/runs/{}/workspace", self.lease.run_id);
                workspace::upload(&self.ctx.client, &path, &self.lease.lease_id, sealed).await?;
                self.sink
                    .line("the plan waits for confirmation: gantry run confirm (or discard)");
                Ok(Ending {
                    outcome: Outcome::Planned,
                    exit_code: None,
                    reason: None,
                })
            }
        }
    }
}
