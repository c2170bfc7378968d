//! A stack pins its tool's version: the launcher runs exactly that version
//! (from GANTRY_TOOLS_DIR when it has it there) or fails the run in
//! PREPARING, naming both versions. With a real Terraform 1.0.3.

mod support;
mod tf;

use std::os::unix::fs::PermissionsExt;

use support::*;
use tf::*;

/// A `terraform` that is not the pinned one: it reports 0.12.31 and fails
/// anything else, so a run that used it could not succeed.
const IMPOSTOR: &str = "#!/bin/sh\n\
if [ \"$1\" = version ]; then echo '{\"terraform_version\":\"0.12.31\",\"platform\":\"linux_amd64\"}'; exit 0; fi\n\
echo 'impostor terraform: this is not the pinned version' >&2; exit 1\n";

fn install(path: &std::path::Path, from: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(from, path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
#[ignore = "slow: terraform"]
fn a_pinned_tool_version_is_used_exactly_or_the_run_fails_in_preparing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(terraform) = terraform_bin() else {
        return;
    };
    // The launcher's PATH has only the impostor; the tools directory has
    // the real 1.0.3, and a mislabelled "1.1.0" that is the same 1.0.3.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("terraform"), IMPOSTOR).unwrap();
    std::fs::set_permissions(
        bin.join("terraform"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let tools_dir = dir.path().join("tools");
    install(&tools_dir.join("terraform/1.0.3/terraform"), &terraform);
    install(&tools_dir.join("terraform/1.1.0/terraform"), &terraform);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = launcher_env(dir.path(), &path);
    env.push(("GANTRY_TOOLS_DIR".into(), tools_dir.display().to_string()));

    let source = module(dir.path());
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _launcher = start_launcher(&pool, &env);
    let created = create_stack(
        &server,
        "web",
        "tf",
        &source,
        &["--tool", "terraform", "--tool-version", "v1.0.3"],
    );
    assert_eq!(created["tool_version"], "1.0.3", "normalised: {created}");
    let shown = server.cli(&["stack", "show", "web"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("terraform 1.0.3"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let openapi = server.api_get("/openapi.json");
    for schema in ["Stack", "CreateStack", "UpdateStack", "StackJob"] {
        assert!(
            openapi["components"]["schemas"][schema]["properties"]["tool_version"].is_object(),
            "{schema} has tool_version in the OpenAPI document"
        );
    }
    let bad = server.cli(&["stack", "update", "web", "--tool-version", "latest"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a tool version"));

    // The right version, from the tools directory (the impostor on PATH
    // would fail both the check and the plan).
    let id = trigger(&server, "web", "proposed");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(plan(&run), (1, 0, 0));
    let log = log_text(&server, &id);
    let pinned = tools_dir.join("terraform/1.0.3/terraform");
    assert!(
        log.contains(&format!("using GANTRY_TOOLS_DIR ({})", pinned.display()))
            && log.contains("terraform 1.0.3, as pinned"),
        "{log}"
    );

    // A binary filed as 1.1.0 that reports 1.0.3: refused before init.
    server.cli_json(&["stack", "update", "web", "--tool-version", "1.1.0"]);
    let id = trigger(&server, "web", "proposed");
    let run = ended(&server, &id, "FAILED");
    assert_eq!(states(&run), ["QUEUED", "READY", "PREPARING", "FAILED"]);
    let why = reason(&run);
    assert!(
        why.starts_with(
            "PREPARING: the stack pins terraform 1.1.0, but this worker's terraform is 1.0.3"
        ),
        "{why}"
    );

    // A version the tools directory lacks: the tool on PATH is checked, and refused.
    server.cli_json(&["stack", "update", "web", "--tool-version", "1.5.7"]);
    let id = trigger(&server, "web", "proposed");
    let run = ended(&server, &id, "FAILED");
    assert_eq!(states(&run), ["QUEUED", "READY", "PREPARING", "FAILED"]);
    let why = reason(&run);
    assert!(
        why.contains("pins terraform 1.5.7, but this worker's terraform is 0.12.31")
            && why.contains("1.5.7/terraform is missing"),
        "{why}"
    );
    assert!(
        !log_text(&server, &id).contains("impostor terraform"),
        "no init ran"
    );

    // Unpinned, the run takes the tool on PATH (here the impostor, which fails init).
    let unpinned = server.cli_json(&["stack", "update", "web", "--tool-version", ""]);
    assert!(unpinned.get("tool_version").is_none(), "{unpinned}");
    let id = trigger(&server, "web", "proposed");
    let run = ended(&server, &id, "FAILED");
    assert!(reason(&run).starts_with("init failed"), "{run:#}");
    assert!(log_text(&server, &id).contains("impostor terraform"));
}

#[test]
fn a_tools_directory_that_is_not_one_stops_the_launcher() {
    let server = Server::start();
    let pool = server.create_pool("tools");
    let (code, stderr) = launcher_exit(Some(&pool), &[("GANTRY_TOOLS_DIR", "/nonexistent/tools")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("GANTRY_TOOLS_DIR: /nonexistent/tools is not a directory"),
        "{stderr}"
    );
}
