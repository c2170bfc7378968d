//! Shared by the tests of stacks with a real Terraform (1.0.3, installed
//! offline by scripts/install-terraform.sh into .tools/) and the null
//! provider from a local mirror: the tools, a root module, and shortcuts.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

pub const LONG: Duration = Duration::from_secs(120);

/// A root module with one `null_resource` whose trigger comes from
/// `TF_VAR_trigger`, and two outputs (one sensitive).
pub const MAIN_TF: &str = r#"
variable "trigger" {
  default = "a"
}
resource "null_resource" "r" {
  triggers = { t = var.trigger }
  provisioner "local-exec" {
    command = "echo the secret is $GANTRY_TEST_SECRET"
  }
}
output "id" {
  value = null_resource.r.id
}
output "hidden" {
  value     = "sensitive-output-value"
  sensitive = true
}
"#;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `.tools/bin/terraform`, or None (skip) outside CI when it is missing.
pub fn terraform_bin() -> Option<PathBuf> {
    let bin = root().join(".tools/bin/terraform");
    let found = bin.exists() && root().join(".tools/terraform-plugins").is_dir();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("terraform is required under CI=true; run scripts/install-terraform.sh");
        }
        eprintln!("skipping: terraform not installed (run scripts/install-terraform.sh)");
        return None;
    }
    Some(bin)
}

/// A Terraform CLI config in `dir` pointing at the null provider mirror.
pub fn cli_config(dir: &Path) -> PathBuf {
    let rc = dir.join("terraformrc");
    std::fs::write(
        &rc,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n  }}\n}}\n",
            root().join(".tools/terraform-plugins").display()
        ),
    )
    .unwrap();
    rc
}

/// The launcher environment for Terraform from .tools on PATH, or None (skip).
pub fn tools(dir: &Path) -> Option<Vec<(String, String)>> {
    let bin = terraform_bin()?;
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Some(launcher_env(dir, &path))
}

/// The launcher environment for Terraform runs with this PATH.
pub fn launcher_env(dir: &Path, path: &str) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), path.to_string()),
        (
            "TF_CLI_CONFIG_FILE".into(),
            cli_config(dir).display().to_string(),
        ),
        (
            "GANTRY_PASSTHROUGH_ENVS".into(),
            "PATH,TF_CLI_CONFIG_FILE".into(),
        ),
    ]
}

/// A directory holding `main.tf` ([`MAIN_TF`]).
pub fn module(dir: &Path) -> PathBuf {
    let source = dir.join("infra");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("main.tf"), MAIN_TF).unwrap();
    source
}

pub fn start_launcher(pool: &Pool, env: &[(String, String)]) -> Launcher {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let launcher = Launcher::start(pool, &env);
    launcher.wait_registered();
    launcher
}

pub fn create_stack(
    server: &Server,
    name: &str,
    pool: &str,
    source: &Path,
    extra: &[&str],
) -> Value {
    let mut args = vec![
        "stack",
        "create",
        name,
        "--pool",
        pool,
        "--source",
        source.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    server.cli_json(&args)
}

pub fn trigger(server: &Server, stack: &str, kind: &str) -> String {
    let run = server.cli_json(&["run", "trigger", stack, "--type", kind]);
    run["id"].as_str().unwrap().to_string()
}

pub fn log_text(server: &Server, id: &str) -> String {
    String::from_utf8_lossy(&server.logs(id)).to_string()
}

/// Waits for the run to end, asserting it ended in `state`.
pub fn ended(server: &Server, id: &str, state: &str) -> Value {
    let run = server.wait_run_end(id, LONG);
    assert_eq!(
        run["state"],
        state,
        "run {id}: {run:#}\nlog:\n{}",
        log_text(server, id)
    );
    run
}

/// The run's reason, for assertions.
pub fn reason(run: &Value) -> String {
    run["reason"].as_str().unwrap_or_default().to_string()
}

pub fn states(run: &Value) -> Vec<String> {
    run["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_string())
        .collect()
}

pub fn plan(run: &Value) -> (u64, u64, u64) {
    let p = &run["plan"];
    (
        p["add"].as_u64().unwrap(),
        p["change"].as_u64().unwrap(),
        p["destroy"].as_u64().unwrap(),
    )
}

pub fn versions(server: &Server, stack: &str) -> Vec<Value> {
    server
        .cli_json(&["stack", "state", "versions", stack])
        .as_array()
        .unwrap()
        .clone()
}

/// A tracked run, confirmed and applied.
pub fn apply(server: &Server, stack: &str) -> Value {
    let id = trigger(server, stack, "tracked");
    server.wait_state(&id, "UNCONFIRMED", LONG);
    server.cli_json(&["run", "confirm", &id]);
    ended(server, &id, "FINISHED")
}

/// The stack's state backend address.
pub fn state_url(server: &Server, stack: &str) -> String {
    format!("{}/api/v1/stacks/{stack}/state", server.url)
}
