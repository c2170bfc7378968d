//! Helpers for the Docker executor's end-to-end tests (docker_executor.rs,
//! docker_images.rs, docker_launcher_image.rs): the images
//! scripts/build-images.sh builds, the docker CLI, whether the engine
//! answers, a run's containers, a launcher on the Docker executor.

// Each test file uses only some of these.
#![allow(dead_code)]

use std::process::Command;

use crate::support::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn runner_image() -> String {
    format!("gantry-runner:{VERSION}")
}

pub fn launcher_image() -> String {
    format!("gantry-launcher:{VERSION}")
}

pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

pub fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Whether to run: docker installed and its engine answering. Under CI=true
/// a missing docker panics (require_tool), and so does a dead engine.
pub fn docker_ready() -> bool {
    if !require_tool("docker") {
        return false;
    }
    let answers = docker(&["info", "--format", "{{.ServerVersion}}"])
        .status
        .success();
    if !answers {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the Docker engine does not answer (docker info failed) under CI=true");
        }
        eprintln!("skipping: the Docker engine does not answer");
    }
    answers
}

/// The images from scripts/build-images.sh must be there: a missing one is
/// a failure with the command that builds it, never a skip.
pub fn require_image(image: &str) {
    assert!(
        docker(&["image", "inspect", image]).status.success(),
        "the image {image} is missing: build it with scripts/build-images.sh (make test-all does)"
    );
}

/// The containers of a run, running or not.
pub fn containers_of(run_id: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=gantry.run_id={run_id}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

pub fn docker_launcher(pool: &Pool, env: &[(&str, &str)]) -> Launcher {
    let image = runner_image();
    let mut all: Vec<(&str, &str)> = vec![
        ("GANTRY_EXECUTOR", "docker"),
        ("GANTRY_DEFAULT_RUNNER_IMAGE", &image),
    ];
    all.extend_from_slice(env);
    let launcher = Launcher::start(pool, &all);
    launcher.wait_registered();
    launcher
}

pub fn submit_with(server: &Server, pool: &str, extra: &[&str], command: &[&str]) -> String {
    let mut args = vec!["run", "submit", "--pool", pool, "--output", "json"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    let output = server.cli(&args);
    assert!(
        output.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn log_of(server: &Server, id: &str) -> String {
    String::from_utf8_lossy(&server.logs(id)).to_string()
}
