//! State an apply produced that the control plane does not have yet.
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
                retries.failed(run_id, &error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
