//! What a run left that the control plane does not have yet: the state an
//! apply produced, and the log a dead launcher had spooled but not sent.
//!
//! Terraform saves its state to the control plane's state backend as it
//! applies. When that save fails (the control plane was unreachable past
//! Terraform's own retries), Terraform writes the state to `errored.tfstate`
//! in the root module and exits non-zero. That file is the only record of
//! what exists in the cloud: the launcher hands it to the control plane
//! itself, as soon as it can, and never deletes a workspace that still
//! holds one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{CallError, ControlPlane, RetryLog};
use crate::logs::{Masker, UploadStart, Uploader};
use crate::orphans::InFlight;
use crate::run::{report_end, Ending, RunContext};

/// The file Terraform leaves when it cannot save its state.
pub const ERRORED_STATE: &str = "errored.tfstate";

/// An `errored.tfstate` anywhere in the workspace (the root module may be
/// a subdirectory of the source).
pub fn unsaved_state(workspace: &Path) -> Option<PathBuf> {
    find(workspace, 6)
}

fn find(dir: &Path, depth: u32) -> Option<PathBuf> {
    let candidate = dir.join(ERRORED_STATE);
    if candidate.is_file() {
        return Some(candidate);
    }
    if depth == 0 {
        return None;
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != ".terraform")
        .find_map(|e| find(&e.path(), depth - 1))
}

/// Uploads the state at `path` for the run's lease, retrying while the
/// control plane is unreachable; removes the file once it is stored.
/// Returns the state version the control plane stored.
pub async fn upload(
    client: &ControlPlane,
    run_id: &str,
    lease_id: &str,
    path: &Path,
) -> Result<u64, CallError> {
    let data = std::fs::read(path)
        .map_err(|e| CallError::Unreachable(format!("cannot read {}: {e}", path.display())))?;
    let mut delay = Duration::from_millis(200);
    let mut retries = RetryLog::new("uploading the state Terraform could not save");
    loop {
        match client
            .put_recovered_state(run_id, lease_id, data.clone())
            .await
        {
            Ok(version) => {
                let _ = std::fs::remove_file(path);
                return Ok(version.version as u64);
            }
            Err(error) if error.is_transient() => {
                retries.failed(&format!("run {run_id}: {error}"));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Ends a run a dead launcher on this work directory left in flight: the
/// rest of its log, then any state Terraform could not save, then the end
/// itself (FAILED: the run's processes died with that launcher). With
/// `resumed` false the control plane did not know the dead launcher's
/// worker any more and has already ended the run: only the files go.
pub async fn recover(ctx: &RunContext, orphan: &InFlight, resumed: bool) {
    let lease = &orphan.lease;
    let run_id = lease.run_id.as_str();
    let (workspace, spool_path) = crate::run::paths(&ctx.config, lease);
    // An apply the dead launcher left was asked to stop (SIGTERM), and may
    // still be saving its state: nothing is judged until it is done.
    wait_for_processes_in(run_id, &workspace).await;
    let mut outcome = Ok(());
    if resumed && !orphan.worker_id.is_empty() {
        outcome = finish_left_behind(ctx, orphan, &workspace, &spool_path).await;
    }
    match (outcome, unsaved_state(&workspace)) {
        (_, Some(path)) => tracing::error!(
            run_id,
            path = %path.display(),
            "the run's workspace holds a Terraform state the control plane does not have; it is kept"
        ),
        (_, None) => {
            kill_leftovers_in(&workspace);
            let _ = std::fs::remove_dir_all(&workspace);
        }
    }
    let _ = std::fs::remove_file(&spool_path);
    let _ = std::fs::remove_file(crate::logs::journal_path(&spool_path));
    ctx.in_flight.forget(lease);
}

/// Waits until no process works in `dir` (by its working directory, from
/// /proc), however long that takes: only a stop, the run timeout or a second
/// SIGTERM may end an apply, and none of those is ours to give here.
async fn wait_for_processes_in(run_id: &str, dir: &Path) {
    let mut waiting = RetryLog::new("waiting for a previous launcher's run to end");
    while let Some(pid) = process_in(dir) {
        waiting.failed(&format!(
            "run {run_id}: process {pid} still works in {}",
            dir.display()
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A process whose working directory is `dir` or below it, other than a
/// Terraform provider plugin: a plugin whose Terraform died may linger, and
/// saves nothing; Terraform (and what it runs) is what is waited for.
fn process_in(dir: &Path) -> Option<u32> {
    processes_in(dir)
        .into_iter()
        .find(|(_, program)| !program.starts_with("terraform-provider-"))
        .map(|(pid, _)| pid)
}

/// The processes working in `dir` or below it, with their program's name.
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            let program = std::fs::read_link(entry.path().join("exe"))
                .ok()?
                .file_name()?
                .to_string_lossy()
                .into_owned();
            cwd.starts_with(&dir).then_some((pid, program))
        })
        .collect()
}

/// Kills what is left working in `dir` once its run is over (a provider
/// plugin that outlived its Terraform), before the directory goes.
fn kill_leftovers_in(dir: &Path) {
    for (pid, program) in processes_in(dir) {
        tracing::info!(
            pid,
            program,
            "killing a leftover of a previous launcher's run"
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

async fn finish_left_behind(
    ctx: &RunContext,
    orphan: &InFlight,
    workspace: &Path,
    spool_path: &Path,
) -> Result<(), crate::run::Abandoned> {
    let lease = &orphan.lease;
    let run_id = lease.run_id.as_str();
    let launcher_env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    // The same masking as the run had.
    let secrets = match &lease.stack {
        Some(job) => {
            let opened =
                crate::workspace::secrets(job, &ctx.config.private_key).unwrap_or_default();
            crate::phases::masked_values(&ctx.config, &launcher_env, job, &opened)
        }
        None => ctx
            .config
            .mask_envs
            .iter()
            .filter_map(|name| Some((name.clone(), launcher_env.get(name)?.clone())))
            .collect(),
    };
    let mut chunks = 0;
    let uploader = match Uploader::open(
        ctx.client.clone(),
        run_id,
        &lease.lease_id,
        spool_path,
        Masker::new(secrets),
        UploadStart::LeftBehind,
    ) {
        Ok(mut uploader) => match uploader.finish_left_behind().await {
            Ok(count) => {
                chunks = count;
                tracing::info!(
                    run_id,
                    chunks,
                    "uploaded the log a dead launcher had spooled"
                );
                Some(uploader)
            }
            Err(crate::logs::UploadError::LeaseLost) => return Err(crate::run::Abandoned),
        },
        // No spool: the launcher died before the run printed anything.
        Err(_) => None,
    };
    let mut reason = "the launcher restarted while the run was in flight".to_string();
    if lease.stack.is_some() {
        if let Some(path) = unsaved_state(workspace) {
            match upload(&ctx.client, run_id, &lease.lease_id, &path).await {
                Ok(version) => reason.push_str(&format!(
                    "; the state Terraform could not save was uploaded (state version {version})"
                )),
                Err(error) => {
                    tracing::error!(run_id, %error, "the control plane refused the state Terraform could not save")
                }
            }
        }
    }
    report_end(
        ctx,
        lease,
        uploader.as_ref(),
        chunks,
        Ending::failed(reason),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_working_in_a_workspace_is_found_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("source");
        std::fs::create_dir_all(&inside).unwrap();
        assert_eq!(process_in(dir.path()), None);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&inside)
            .spawn()
            .unwrap();
        assert_eq!(process_in(dir.path()), Some(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(process_in(dir.path()), None);
    }

    #[test]
    fn finds_an_errored_state_in_a_nested_root_module_but_not_in_providers() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(unsaved_state(dir.path()), None);
        let hidden = dir.path().join("source/.terraform/x");
        std::fs::create_dir_all(&hidden).unwrap();
        std::fs::write(hidden.join(ERRORED_STATE), "{}").unwrap();
        assert_eq!(
            unsaved_state(dir.path()),
            None,
            ".terraform is not a root module"
        );
        let root = dir.path().join("source/envs/prod");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(ERRORED_STATE), "{}").unwrap();
        assert_eq!(unsaved_state(dir.path()), Some(root.join(ERRORED_STATE)));
    }
}
