//! The launcher image itself (scripts/build-images.sh) running a run in a
//! sibling container through the host's Docker engine, and draining on
//! SIGTERM.
//!
//! Needs docker and the images from `scripts/build-images.sh` (the test
//! setup runs it). With CI=true a missing docker fails this test instead of
//! skipping it.

mod docker;
mod support;

use std::time::Duration;

use docker::*;
use support::*;

/// Removes a container when dropped, so a failing test leaves none.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[test]
#[ignore = "slow: docker"]
fn the_launcher_image_runs_a_run_in_a_sibling_container() {
    if !docker_ready() {
        return;
    }
    require_image(&launcher_image());
    require_image(&runner_image());
    let server = Server::start();
    let pool = server.create_pool("containerised");
    // The work directory: on the host here, at another path in the launcher
    // container; run containers mount their workspaces through the host.
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let name = format!("gantry-test-launcher-{}", std::process::id());
    let _ = docker(&["rm", "-f", &name]);
    let guard = ContainerGuard(name.clone());
    let private_key = pool.private_key_b64();
    let run_args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        name.clone(),
        // The control plane listens on the host's loopback.
        "--network".into(),
        "host".into(),
        "-v".into(),
        "/var/run/docker.sock:/var/run/docker.sock".into(),
        "-v".into(),
        format!("{}:/var/lib/gantry-launcher", work.display()),
        "-e".into(),
        format!("GANTRY_TOKEN={}", pool.token),
        "-e".into(),
        format!("GANTRY_POOL_PRIVATE_KEY={private_key}"),
        "-e".into(),
        format!("GANTRY_DEFAULT_RUNNER_IMAGE={}", runner_image()),
        "-e".into(),
        "GANTRY_STOP_GRACE=2s".into(),
        launcher_image(),
    ];
    let args: Vec<&str> = run_args.iter().map(String::as_str).collect();
    docker_ok(&args);
    wait_for(
        "the containerised launcher to register",
        Duration::from_secs(30),
        || {
            let logs = docker(&["logs", &name]);
            String::from_utf8_lossy(&logs.stderr)
                .contains("registered; waiting for runs")
                .then_some(())
        },
    );
    let workers = server.cli_json(&["worker", "list"]);
    assert_eq!(workers.as_array().map(Vec::len), Some(1), "{workers}");

    let id = server.submit(
        "containerised",
        &[
            "sh",
            "-c",
            "echo hello from $(hostname) in $(pwd); echo data > file; cat file",
        ],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    let log = log_of(&server, &id);
    assert_eq!(
        run["state"],
        "FINISHED",
        "{run}\n{log}\n{}",
        String::from_utf8_lossy(&docker(&["logs", &name]).stderr)
    );
    assert!(
        log.contains("in /workspace") && log.contains("data"),
        "{log}"
    );
    assert!(
        containers_of(&id).is_empty(),
        "the sibling container was removed"
    );

    // It drains on SIGTERM like the binary does.
    docker_ok(&["stop", "-t", "20", &name]);
    let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(
        code.trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&docker(&["logs", &name]).stderr)
    );
    drop(guard);
}
