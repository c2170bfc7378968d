//! A stack run's workspace on the worker: the source (the uploaded
//! archive; a git clone is `git`'s), the root module in it, the backend override, the sealed
//! archive kept between plan and apply, and reading Terraform's JSON.

use std::path::{Path, PathBuf};

use base64::Engine;
use gantry_pki::{PoolPrivateKey, PoolPublicKey};
use gantry_wire::stack::{PlanSummary, ResourceChange, RunOutput, StackJob, MAX_PLAN_RESOURCES};
use reqwest::Method;

use crate::client::ControlPlane;

/// Written next to the root module so its state lives in the control plane.
pub const BACKEND_OVERRIDE: &str = "gantry_backend_override.tf";

/// The root module: `project_root` inside `source`, resolved (symbolic links
/// and `..` followed) and checked to stay inside the source. Everything the
/// launcher writes or hands to the run's user goes under this path, so a
/// link committed in the repository cannot point it at the worker's own
/// files.
pub fn resolve_root(source: &Path, project_root: &str) -> Result<PathBuf, String> {
    let not_a_directory = || {
        format!(
            "PREPARING: the project root {project_root:?} is not a directory of the source; fix the stack's --project-root"
        )
    };
    let source = std::fs::canonicalize(source)
        .map_err(|e| format!("PREPARING: cannot resolve the source directory: {e}"))?;
    let root = std::fs::canonicalize(source.join(project_root)).map_err(|_| not_a_directory())?;
    if !root.starts_with(&source) {
        return Err(format!(
            "PREPARING: the project root {project_root:?} leads outside the stack's source (through a symbolic link or `..`); \
             the launcher refuses to use it: point the stack's --project-root at a directory inside the repository"
        ));
    }
    if !root.is_dir() {
        return Err(not_a_directory());
    }
    Ok(root)
}

/// Writes `data` as the file `name` of the root module, replacing whatever
/// the source put there (a symbolic link included: it is removed, never
/// followed).
pub fn write_new(root: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = root.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?
        .write_all(data)
}

/// Fetches a response body as bytes; errors name the call.
pub async fn fetch(client: &ControlPlane, path: &str, lease_id: &str) -> Result<Vec<u8>, String> {
    let response = client
        .request(Method::GET, path, std::time::Duration::from_secs(300))
        .header(gantry_wire::LEASE_HEADER, lease_id)
        .send()
        .await
        .map_err(|e| format!("cannot reach the control plane for {path}: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "GET {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body.to_vec())
}

pub async fn upload(
    client: &ControlPlane,
    path: &str,
    lease_id: &str,
    data: Vec<u8>,
) -> Result<(), String> {
    let response = client
        .request(Method::PUT, path, std::time::Duration::from_secs(300))
        .header(gantry_wire::LEASE_HEADER, lease_id)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(data)
        .send()
        .await
        .map_err(|e| format!("cannot reach the control plane for {path}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(format!("PUT {path}: HTTP {status}: {body}"));
    }
    Ok(())
}

pub fn unpack(archive: &[u8], dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    tar.set_preserve_permissions(true);
    tar.unpack(dest)
}

/// Packs the workspace for apply, without the providers (init fetches them again).
pub fn pack(dir: &Path) -> std::io::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut archive = tar::Builder::new(encoder);
    archive.follow_symlinks(false);
    add_dir(&mut archive, dir, Path::new(""))?;
    archive.into_inner()?.finish()
}

fn add_dir<W: std::io::Write>(
    archive: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        let skip = path.ends_with(".terraform/providers") || path.ends_with(".terraform/plugins");
        if skip {
            continue;
        }
        if entry.file_type()?.is_dir() {
            archive.append_dir(&path, entry.path())?;
            add_dir(archive, root, &path)?;
        } else {
            archive.append_path_with_name(entry.path(), &path)?;
        }
    }
    Ok(())
}

pub fn seal(key: &PoolPublicKey, data: &[u8]) -> Result<Vec<u8>, String> {
    gantry_pki::envelope::seal(key, data).map_err(|e| e.to_string())
}

pub fn open(key: &PoolPrivateKey, data: &[u8]) -> Result<Vec<u8>, String> {
    gantry_pki::envelope::open(key, data).map_err(|e| e.to_string())
}

/// The stack's secret variables, opened with the pool's private key.
pub fn secrets(job: &StackJob, key: &PoolPrivateKey) -> Result<Vec<(String, String)>, String> {
    job.secret_env
        .iter()
        .map(|(name, sealed)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(sealed)
                .map_err(|e| format!("secret {name}: {e}"))?;
            let value = open(key, &bytes).map_err(|e| format!("secret variable {name}: {e}"))?;
            Ok((name.clone(), String::from_utf8_lossy(&value).to_string()))
        })
        .collect()
}

/// Counts what `terraform show -json plan` will do, as Terraform prints it.
pub fn plan_summary(plan_json: &[u8]) -> Result<PlanSummary, String> {
    let plan: serde_json::Value =
        serde_json::from_slice(plan_json).map_err(|e| format!("cannot read `show -json`: {e}"))?;
    let mut summary = PlanSummary::default();
    for change in plan["resource_changes"].as_array().into_iter().flatten() {
        let actions: Vec<&str> = change["change"]["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        let action = match actions.as_slice() {
            ["create"] => {
                summary.add += 1;
                "create"
            }
            ["update"] => {
                summary.change += 1;
                "update"
            }
            ["delete"] => {
                summary.destroy += 1;
                "delete"
            }
            ["delete", "create"] | ["create", "delete"] => {
                summary.add += 1;
                summary.destroy += 1;
                "replace"
            }
            ["read"] => "read",
            _ => continue,
        };
        if summary.resources.len() < MAX_PLAN_RESOURCES {
            summary.resources.push(ResourceChange {
                address: change["address"].as_str().unwrap_or("?").to_string(),
                action: action.to_string(),
            });
        }
    }
    // A plan can change only outputs (a stack's first output, a changed
    // value): Terraform applies it, so it is a change too.
    for change in plan["output_changes"].as_object().into_iter().flatten() {
        let actions = change.1["actions"].as_array();
        let no_op = actions.is_some_and(|a| a.iter().all(|a| a == "no-op"));
        if !no_op {
            summary.outputs += 1;
        }
    }
    Ok(summary)
}

/// Outputs from `terraform output -json`, sensitive values masked.
pub fn outputs(output_json: &[u8]) -> Vec<RunOutput> {
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(output_json).unwrap_or_default();
    parsed
        .into_iter()
        .map(|(name, o)| {
            let sensitive = o["sensitive"].as_bool().unwrap_or(false);
            RunOutput {
                name,
                sensitive,
                value: if sensitive {
                    serde_json::Value::Null
                } else {
                    o["value"].clone()
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_summary_counts_replaces_as_add_and_destroy() {
        let plan = br#"{"resource_changes":[
            {"address":"null_resource.a","change":{"actions":["create"]}},
            {"address":"null_resource.b[0]","change":{"actions":["delete","create"]}},
            {"address":"null_resource.c","change":{"actions":["update"]}},
            {"address":"null_resource.d","change":{"actions":["no-op"]}}]}"#;
        let s = plan_summary(plan).unwrap();
        assert_eq!((s.add, s.change, s.destroy), (2, 1, 1));
        let listed: Vec<(&str, &str)> = s
            .resources
            .iter()
            .map(|r| (r.address.as_str(), r.action.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("null_resource.a", "create"),
                ("null_resource.b[0]", "replace"),
                ("null_resource.c", "update")
            ]
        );
    }

    #[test]
    fn a_project_root_cannot_lead_outside_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(source.join("envs/prod")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, source.join("escape")).unwrap();
        std::os::unix::fs::symlink("envs", source.join("inner")).unwrap();
        std::fs::write(source.join("file.tf"), "").unwrap();

        let root = resolve_root(&source, "envs/prod").unwrap();
        assert!(root.ends_with("source/envs/prod"), "{root:?}");
        assert!(resolve_root(&source, "inner/prod")
            .unwrap()
            .ends_with("source/envs/prod"));
        assert!(resolve_root(&source, "").unwrap().ends_with("source"));
        for escaping in [
            "escape",
            "escape/",
            "../outside",
            "envs/../../outside",
            "/tmp",
        ] {
            let error = resolve_root(&source, escaping).unwrap_err();
            assert!(
                error.contains("outside the stack's source"),
                "{escaping}: {error}"
            );
        }
        for missing in ["nope", "file.tf"] {
            let error = resolve_root(&source, missing).unwrap_err();
            assert!(error.contains("not a directory"), "{missing}: {error}");
        }
    }

    #[test]
    fn the_backend_override_replaces_a_link_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&victim, root.join(BACKEND_OVERRIDE)).unwrap();
        write_new(&root, BACKEND_OVERRIDE, b"terraform {}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let written = root.join(BACKEND_OVERRIDE);
        assert!(!std::fs::symlink_metadata(&written).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(written).unwrap(), "terraform {}");
    }

    #[test]
    fn plan_summary_counts_output_changes() {
        let plan = br#"{"resource_changes":[{"change":{"actions":["no-op"]}}],
            "output_changes":{
                "new":{"actions":["create"]},
                "same":{"actions":["no-op"]},
                "changed":{"actions":["update"]},
                "gone":{"actions":["delete"]}}}"#;
        let s = plan_summary(plan).unwrap();
        assert_eq!((s.add, s.change, s.destroy, s.outputs), (0, 0, 0, 3));
        assert!(s.has_changes());
    }

    #[test]
    fn sensitive_outputs_are_masked() {
        let out = outputs(
            br#"{"a":{"sensitive":false,"value":"x"},"b":{"sensitive":true,"value":"hunter2"}}"#,
        );
        assert_eq!(out[0].value, serde_json::json!("x"));
        assert!(out[1].sensitive && out[1].value.is_null());
    }
}
