//! The apply half of a stack run: the stored workspace opened, the plan
//! checked against the state as it is now, and `apply` run protected (see
//! `Phases::protected`), with the state Terraform could not save handed to
//! the control plane.

use std::path::Path;
use std::time::Duration;

use gantry_wire::run::RunState;
use gantry_wire::stack::ReportPlan;
use tokio::time::Instant;

use super::{Halt, Phases};
use crate::executor::Exit;
use crate::planfile::{self, StateMeta};
use crate::run::Ending;
use crate::workspace;

impl Phases<'_> {
    /// Nothing of an apply starts (not even its hooks) until the control
    /// plane has confirmed that this worker still holds the lease: a plan
    /// that ended while cut off from it may belong to a run already failed
    /// as "worker lost". So the APPLYING report is retried until it lands,
    /// for as long as the run may last, and never skipped.
    pub(super) async fn enter_apply(&self) -> Result<(), Halt> {
        let (client, run_id, lease_id) =
            (&self.ctx.client, &self.lease.run_id, &self.lease.lease_id);
        let mut delay = Duration::from_millis(200);
        let mut failures = crate::client::RetryLog::new("reporting the start of the apply");
        loop {
            match client.report_state(run_id, lease_id, RunState::Applying).await {
                Ok(()) => {
                    failures.succeeded();
                    return Ok(());
                }
                Err(error) if error.is_lease_lost() => return Err(Halt::Abandoned),
                Err(error) if error.is_permanent() => {
                    return Err(Halt::from(format!(
                        "the control plane refused the start of the apply: {error}; nothing was applied"
                    )))
                }
                Err(error) => {
                    if Instant::now() >= self.deadline {
                        return Err(Halt::from(format!(
                            "the run timed out waiting for the control plane to confirm the apply may start ({error}); nothing was applied"
                        )));
                    }
                    failures.failed(&format!("run {run_id}: {error}"));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    pub(super) async fn apply_phase(&mut self, source: &Path) -> Result<Ending, Halt> {
        let path = format!("/worker/runs/{}/workspace", self.lease.run_id);
        let sealed = workspace::fetch(&self.ctx.client, &path, &self.lease.lease_id).await?;
        let packed = workspace::open(&self.ctx.config.private_key, &sealed)?;
        workspace::unpack(&packed, source)
            .map_err(|e| format!("cannot unpack the stored workspace: {e}"))?;
        self.root = workspace::resolve_root(source, &self.job.project_root)?;
        self.check_tool_version("APPLYING").await?;
        // The providers were left out of the stored workspace.
        self.init().await?;
        self.check_not_stale().await?;
        self.apply().await
    }

    /// Hands the control plane the state Terraform could not save
    /// (`errored.tfstate`), if there is one. `None` when there was none.
    async fn save_unsaved_state(&mut self) -> Result<Option<u64>, Halt> {
        let Some(path) = crate::recovery::unsaved_state(&self.root) else {
            return Ok(None);
        };
        self.sink.line(&format!(
            "Terraform left {}: uploading it to the control plane",
            crate::recovery::ERRORED_STATE
        ));
        let (run_id, lease_id) = (&self.lease.run_id, &self.lease.lease_id);
        match crate::recovery::upload(&self.ctx.client, run_id, lease_id, &path).await {
            Ok(version) => Ok(Some(version)),
            Err(error) => {
                // The workspace, with the file, is kept (see run::execute).
                tracing::error!(run_id = %run_id, %error, path = %path.display(), "the control plane refused the state Terraform could not save");
                self.sink.line(&format!(
                    "the control plane refused the state: {error}; it stays in {} on this worker",
                    path.display()
                ));
                Err(Halt::Abandoned)
            }
        }
    }

    /// Refuses to apply a saved plan made against another state than the
    /// stack's current one (Terraform would refuse too, less clearly; it
    /// still checks under the lock, for a change after this check).
    async fn check_not_stale(&mut self) -> Result<(), Halt> {
        let plan = std::fs::read(self.root.join("plan.bin"))
            .map_err(|e| format!("the stored workspace has no saved plan (plan.bin): {e}"))?;
        let planned = StateMeta::of_plan(&plan)?;
        let job = self.job;
        let current = self
            .ctx
            .client
            .stack_state(&job.state_address, &job.state_username, &job.state_password)
            .await
            .and_then(|state| StateMeta::of_state(&state));
        match current {
            Ok(current) => {
                if let Some(why) = planfile::staleness(&planned, &current) {
                    return Err(Halt::from(why));
                }
                self.sink.line(&format!(
                    "the state is the one the plan was made against (serial {})",
                    current.serial
                ));
            }
            // Terraform makes the same check itself.
            Err(error) => self.sink.line(&format!(
                "cannot read the stack's state to check the plan is current ({error}); Terraform checks it"
            )),
        }
        Ok(())
    }

    pub(super) async fn apply(&mut self) -> Result<Ending, Halt> {
        self.hooks("before_apply").await?;
        let apply = vec![
            self.tool(),
            "apply".into(),
            "-input=false".into(),
            "-no-color".into(),
            "plan.bin".into(),
        ];
        let log_start = self.log_len();
        self.protected = true;
        let applied = self.step("apply", apply).await;
        self.protected = false;
        if let Err(halt) = applied {
            let Some(version) = self.save_unsaved_state().await? else {
                return Err(halt);
            };
            let saved = format!(
                "Terraform could not save its state to the control plane; the launcher saved it (state version {version})"
            );
            let output = self.output_since(log_start);
            if !output.contains("Apply complete!") && !planfile::only_the_state_save_failed(&output)
            {
                return Err(match halt {
                    Halt::End(mut ending) => {
                        ending.reason =
                            Some(format!("{}; {saved}", ending.reason.unwrap_or_default()));
                        Halt::End(ending)
                    }
                    other => other,
                });
            }
            self.sink.line(&format!("the apply completed; {saved}"));
        }
        if self.lease_lost {
            return Err(Halt::Abandoned);
        }
        let json = self
            .capture("outputs", "output -json -no-color", ".gantry-outputs.json")
            .await?;
        let outputs = workspace::outputs(&json);
        self.report_plan(ReportPlan {
            outputs,
            ..ReportPlan::default()
        })
        .await?;
        self.hooks("after_apply").await?;
        Ok(Ending::of_exit(Exit::Code(0)))
    }
}
