//! The Docker executor against the real Docker engine: a container per run
//! from its runner image, what the run sees, stop, timeouts, cleanup, the
//! reaping of a crashed launcher's containers, a real Terraform apply in the
//! runner image, and the launcher image itself running a run.
//!
//! Needs docker; the images come from `scripts/build-images.sh` (the test
//! setup runs it), except the tiny image the smoke test builds itself. With
//! CI=true a missing docker fails these tests instead of skipping them.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn runner_image() -> String {
    format!("gantry-runner:{VERSION}")
}

fn launcher_image() -> String {
    format!("gantry-launcher:{VERSION}")
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
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
fn docker_ready() -> bool {
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
fn require_image(image: &str) {
    assert!(
        docker(&["image", "inspect", image]).status.success(),
        "the image {image} is missing: build it with scripts/build-images.sh (make test-all does)"
    );
}

/// A tiny image the smoke test builds itself from Debian's busybox-static,
/// with an ENTRYPOINT and CMD that would hijack a run that honoured them.
fn test_image() -> String {
    let image = "gantry-test-busybox:hijacker".to_string();
    if docker(&["image", "inspect", &image]).status.success() {
        return image;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("rootfs/bin/busybox"))
        .expect("Debian's busybox-static at /bin/busybox");
    for applet in [
        "sh", "id", "env", "ls", "touch", "cat", "echo", "sleep", "pwd", "false", "head", "tr",
    ] {
        std::os::unix::fs::symlink("busybox", dir.path().join("rootfs/bin").join(applet)).unwrap();
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV IMAGE_VAR=from-the-image\nENTRYPOINT [\"/bin/false\"]\nCMD [\"hijacked\"]\n",
    )
    .unwrap();
    let output = Command::new("docker")
        .args(["build", "-q", "-t", &image])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    image
}

/// The containers of a run, running or not.
fn containers_of(run_id: &str) -> Vec<String> {
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

fn docker_launcher(pool: &Pool, env: &[(&str, &str)]) -> Launcher {
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

fn submit_with(server: &Server, pool: &str, extra: &[&str], command: &[&str]) -> String {
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

fn log_of(server: &Server, id: &str) -> String {
    String::from_utf8_lossy(&server.logs(id)).to_string()
}

#[test]
fn a_task_runs_in_its_own_container_as_an_unprivileged_user() {
    if !docker_ready() {
        return;
    }
    let image = test_image();
    let server = Server::start();
    let pool = server.create_pool("docker-smoke");
    let launcher = Launcher::start(&pool, &[("GANTRY_EXECUTOR", "docker")]);
    launcher.wait_registered();

    let script = "echo uid=$(id -u) gid=$(id -g) pwd=$(pwd) home=$HOME image_var=$IMAGE_VAR; echo to-stderr >&2; \
                  touch written-by-the-run && ls; echo done";
    let id = submit_with(
        &server,
        "docker-smoke",
        &["--image", &image],
        &["sh", "-c", script],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    let log = log_of(&server, &id);
    assert_eq!(run["state"], "FINISHED", "{run}\n{log}");
    // Not the image's ENTRYPOINT/CMD (/bin/false hijacked): the run's command.
    assert!(
        log.contains("uid=1000 gid=1000 pwd=/workspace home=/workspace"),
        "{log}"
    );
    assert!(
        log.contains("image_var=from-the-image"),
        "the image's own ENV applies: {log}"
    );
    // stdout and stderr both reach the log; each keeps its order, but the
    // engine carries them as two streams, so their relative order is only
    // that of arrival (as in `docker logs`).
    assert!(
        log.contains("to-stderr\n") && log.contains("written-by-the-run\ndone\n"),
        "{log}"
    );
    assert!(
        containers_of(&id).is_empty(),
        "the run's container was removed"
    );

    let id = submit_with(
        &server,
        "docker-smoke",
        &["--image", &image],
        &["sh", "-c", "echo failing; exit 7"],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED");
    assert_eq!(run["exit_code"], 7);
    assert_eq!(run["reason"], "the command exited with code 7");
    assert!(containers_of(&id).is_empty());

    // A command the image lacks fails the run and says so.
    let id = submit_with(
        &server,
        "docker-smoke",
        &["--image", &image],
        &["/no/such/program"],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot start `/no/such/program`") && reason.contains(&image),
        "{run}"
    );
    assert!(log_of(&server, &id).contains("cannot start"));
    assert!(containers_of(&id).is_empty());
}

#[test]
#[ignore = "slow: docker"]
fn a_task_runs_in_the_runner_image_by_default() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let server = Server::start();
    let pool = server.create_pool("runner");
    let _launcher = docker_launcher(&pool, &[]);
    let id = server.submit(
        "runner",
        &["sh", "-c", "git --version && terraform version && id"],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    let log = log_of(&server, &id);
    assert_eq!(run["state"], "FINISHED", "{run}\n{log}");
    assert!(
        log.contains("git version") && log.contains("Terraform v1.0.3"),
        "{log}"
    );
    assert!(log.contains("uid=1000(gantry)"), "{log}");
}

#[test]
#[ignore = "slow: docker"]
fn a_container_gets_the_run_environment_and_nothing_else_from_the_launcher() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let server = Server::start();
    let pool = server.create_pool("docker-env");
    let _launcher = docker_launcher(
        &pool,
        &[
            ("GANTRY_PASSTHROUGH_ENVS", "TEAM_SETTING"),
            ("TEAM_SETTING", "passed"),
            ("LAUNCHER_ONLY", "hidden"),
            ("HTTPS_PROXY", "http://proxy.invalid:3128"),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
    );
    let id = submit_with(
        &server,
        "docker-env",
        &["--env", "GREETING=hi"],
        &[
            "sh",
            "-c",
            "env | sort; cat /proc/1/environ | tr '\\0' '\\n'",
        ],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    let env = log_of(&server, &id);
    assert_eq!(run["state"], "FINISHED", "{run}\n{env}");
    for expected in [
        "GREETING=hi",
        "TEAM_SETTING=passed",
        "HTTPS_PROXY=http://proxy.invalid:3128",
        "NO_PROXY=127.0.0.1,localhost",
        "HOME=/workspace",
        "GANTRY_WORKSPACE=/workspace",
        &format!("GANTRY_RUN_ID={id}"),
    ] {
        assert!(env.contains(expected), "{expected} missing: {env}");
    }
    assert!(!env.contains("LAUNCHER_ONLY"), "{env}");
    assert!(
        !env.contains("GANTRY_TOKEN") && !env.contains("GANTRY_POOL_PRIVATE_KEY"),
        "credentials leaked: {env}"
    );
    assert!(
        !env.contains(&pool.token) && !env.contains(&pool.private_key_b64()[..40]),
        "credential values leaked: {env}"
    );
}

#[test]
#[ignore = "slow: docker"]
fn extra_mounts_limits_and_the_network_reach_the_container() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let shared = tempfile::tempdir().unwrap();
    let read_only = shared.path().join("ro");
    let writable = shared.path().join("rw");
    std::fs::create_dir_all(&read_only).unwrap();
    std::fs::create_dir_all(&writable).unwrap();
    std::fs::write(read_only.join("hello.txt"), "hello from the host\n").unwrap();
    std::fs::set_permissions(
        &writable,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mounts = format!(
        "{}:/data:ro,{}:/scratch",
        read_only.display(),
        writable.display()
    );

    let server = Server::start();
    let pool = server.create_pool("mounts");
    let _launcher = docker_launcher(
        &pool,
        &[
            ("GANTRY_WORKER_EXTRA_MOUNTS", &mounts),
            ("GANTRY_WORKER_CPUS", "0.5"),
            ("GANTRY_WORKER_MEMORY", "64m"),
            ("GANTRY_WORKER_NETWORK", "none"),
        ],
    );
    let script = "cat /data/hello.txt; touch /data/nope 2>&1 || echo read-only-refused; echo made > /scratch/out.txt; \
                  cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; \
                  cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                  ls /sys/class/net";
    let id = server.submit("mounts", &["sh", "-c", script]);
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    let log = log_of(&server, &id);
    assert_eq!(run["state"], "FINISHED", "{run}\n{log}");
    assert!(log.contains("hello from the host"), "{log}");
    assert!(log.contains("read-only-refused"), "{log}");
    assert_eq!(
        std::fs::read_to_string(writable.join("out.txt")).unwrap(),
        "made\n"
    );
    assert!(
        log.contains("50000"),
        "0.5 CPUs: a 50ms quota per 100ms: {log}"
    );
    assert!(
        log.contains(&(64u64 << 20).to_string()),
        "64m of memory: {log}"
    );
    assert!(
        log.trim_end().ends_with("lo"),
        "GANTRY_WORKER_NETWORK=none leaves only loopback: {log}"
    );

    // The memory limit is real: a run that blows it is killed and says why.
    let id = server.submit(
        "mounts",
        &[
            "sh",
            "-c",
            "echo filling; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED", "{run}");
    assert!(
        run["reason"].as_str().unwrap().contains("out of memory"),
        "{run}"
    );
    assert!(containers_of(&id).is_empty());
}

#[test]
#[ignore = "slow: docker"]
fn stop_mid_run_removes_the_container() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let server = Server::start();
    let pool = server.create_pool("docker-stop");
    let _launcher = docker_launcher(&pool, &[]);
    // PID 1 in a container ignores TERM unless it handles it: the KILL after
    // the grace period (2s in the harness) ends it, as `docker stop` does.
    let id = server.submit(
        "docker-stop",
        &["sh", "-c", "echo started; sleep 300 & wait"],
    );
    wait_for("the run to start", Duration::from_secs(30), || {
        log_of(&server, &id).contains("started").then_some(())
    });
    assert_eq!(containers_of(&id).len(), 1, "one container while it runs");

    let started = Instant::now();
    server.cli_json(&["run", "stop", &id]);
    let run = server.wait_run_end(&id, Duration::from_secs(30));
    assert_eq!(run["state"], "STOPPED", "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped within the grace plus slack: {:?}",
        started.elapsed()
    );
    assert!(log_of(&server, &id).contains("stopping the run"));
    assert!(
        containers_of(&id).is_empty(),
        "no container left behind: {:?}",
        containers_of(&id)
    );
}

#[test]
#[ignore = "slow: docker"]
fn a_run_timeout_kills_the_container() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let server = Server::start();
    let pool = server.create_pool("docker-timeout");
    let _launcher = docker_launcher(&pool, &[("GANTRY_RUN_TIMEOUT", "3s")]);
    let id = server.submit(
        "docker-timeout",
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 143' TERM; while true; do echo tick; sleep 0.2; done",
        ],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(30));
    assert_eq!(run["state"], "FAILED", "{run}");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 3s (GANTRY_RUN_TIMEOUT)"),
        "{run}"
    );
    let log = log_of(&server, &id);
    assert!(
        log.contains("tick") && log.contains("GANTRY_RUN_TIMEOUT"),
        "{log}"
    );
    assert!(
        log.contains("got TERM"),
        "TERM reaches the command first: {log}"
    );
    assert!(containers_of(&id).is_empty());
}

#[test]
#[ignore = "slow: docker"]
fn a_missing_image_fails_the_run_and_names_the_image() {
    if !docker_ready() {
        return;
    }
    let server = Server::start();
    let pool = server.create_pool("no-image");
    let launcher = Launcher::start(&pool, &[("GANTRY_EXECUTOR", "docker")]);
    launcher.wait_registered();

    // No registry answers here: the pull fails, and the reason names the image.
    let missing = "gantry-no-such-image:404";
    let id = submit_with(&server, "no-image", &["--image", missing], &["true"]);
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED", "{run}");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("cannot pull the runner image `{missing}`")),
        "{run}"
    );
    assert!(log_of(&server, &id).contains(missing));

    // No image named and no default: the reason says what to set.
    let id = server.submit("no-image", &["true"]);
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("GANTRY_DEFAULT_RUNNER_IMAGE"),
        "{run}"
    );
    drop(launcher);

    // GANTRY_PULL_POLICY=never does not even try.
    let launcher = Launcher::start(
        &pool,
        &[
            ("GANTRY_EXECUTOR", "docker"),
            ("GANTRY_PULL_POLICY", "never"),
        ],
    );
    launcher.wait_registered();
    let id = submit_with(&server, "no-image", &["--image", missing], &["true"]);
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains(missing) && reason.contains("GANTRY_PULL_POLICY=never"),
        "{run}"
    );
}

#[test]
#[ignore = "slow: docker"]
fn bad_container_settings_stop_the_launcher_at_start() {
    if !docker_ready() {
        return;
    }
    let server = Server::start();
    let pool = server.create_pool("bad-settings");
    for (variable, value, expected) in [
        (
            "GANTRY_WORKER_RUNTIME",
            "no-such-runtime",
            "GANTRY_WORKER_RUNTIME",
        ),
        (
            "GANTRY_WORKER_NETWORK",
            "no-such-network",
            "GANTRY_WORKER_NETWORK",
        ),
        ("GANTRY_WORKER_MEMORY", "lots", "GANTRY_WORKER_MEMORY"),
        ("GANTRY_WORKER_CPUS", "4096", "GANTRY_WORKER_CPUS"),
        ("GANTRY_PULL_POLICY", "sometimes", "GANTRY_PULL_POLICY"),
        (
            "GANTRY_DOCKER_CONFIG_DIR",
            "/no/such/dir",
            "GANTRY_DOCKER_CONFIG_DIR",
        ),
    ] {
        let (code, stderr) = launcher_exit(
            Some(&pool),
            &[("GANTRY_EXECUTOR", "docker"), (variable, value)],
        );
        assert_eq!(code, 2, "{variable}={value}: {stderr}");
        assert!(stderr.contains(expected), "{variable}={value}: {stderr}");
    }
    let (code, stderr) = launcher_exit(
        Some(&pool),
        &[
            ("GANTRY_EXECUTOR", "docker"),
            ("DOCKER_HOST", "unix:///no/such/docker.sock"),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("GANTRY_EXECUTOR") && stderr.contains("/no/such/docker.sock"),
        "{stderr}"
    );
}

#[test]
#[ignore = "slow: docker"]
fn a_restarted_launcher_reaps_the_containers_of_its_crashed_predecessor() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let server = Server::start_with("60s");
    let pool = server.create_pool("reap");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let image = runner_image();
    let env = [
        ("GANTRY_EXECUTOR", "docker"),
        ("GANTRY_DEFAULT_RUNNER_IMAGE", image.as_str()),
    ];
    let mut launcher = Launcher::start_in(&pool, &work, &env);
    launcher.wait_registered();
    let id = server.submit("reap", &["sh", "-c", "echo started; sleep 300"]);
    wait_for("the run to start", Duration::from_secs(30), || {
        log_of(&server, &id).contains("started").then_some(())
    });

    // SIGKILL: the launcher cannot clean up; its container runs on.
    launcher.proc.signal(nix::sys::signal::Signal::SIGKILL);
    launcher.proc.wait_exit(Duration::from_secs(10));
    let left = containers_of(&id);
    assert_eq!(left.len(), 1, "the container outlives the crashed launcher");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &left[0]]).trim(),
        "true"
    );

    // The same launcher (same work directory) comes back: the container goes,
    // and the run fails at once, not after the 60s lease timeout.
    let started = Instant::now();
    let launcher = Launcher::start_in(&pool, &work, &env);
    launcher.wait_registered();
    assert!(
        containers_of(&id).is_empty(),
        "reaped at start: {:?}",
        containers_of(&id)
    );
    let run = server.wait_run_end(&id, Duration::from_secs(15));
    assert_eq!(run["state"], "FAILED", "{run}");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("launcher restarted while the run was in flight"),
        "{run}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        launcher
            .proc
            .log()
            .contains("removed a run container left by a previous launcher"),
        "{}",
        launcher.proc.log()
    );
    assert!(
        std::fs::read_dir(work.join("workspaces"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "its workspace is gone too"
    );

    // And the restarted launcher takes new runs.
    let id = server.submit("reap", &["echo", "after the reap"]);
    assert_eq!(
        server.wait_run_end(&id, Duration::from_secs(60))["state"],
        "FINISHED"
    );
}

#[test]
#[ignore = "slow: docker"]
fn terraform_plans_and_applies_in_the_runner_image() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let server = Server::start();
    let pool = server.create_pool("terraform");
    let _launcher = docker_launcher(&pool, &[]);
    let config = r#"
resource "null_resource" "hello" {
  triggers = { run = "gantry" }
  provisioner "local-exec" {
    command = "echo hello from local-exec in $(pwd)"
  }
}
output "id" { value = null_resource.hello.id }
"#;
    let script = format!(
        "set -e; cat > main.tf <<'EOF'\n{config}\nEOF\n\
         terraform init -input=false -no-color -plugin-dir=/usr/local/share/terraform/plugins\n\
         terraform plan -input=false -no-color -out=tfplan\n\
         terraform apply -input=false -no-color tfplan\n\
         terraform output -no-color id"
    );
    let id = server.submit("terraform", &["sh", "-c", &script]);
    let run = server.wait_run_end(&id, Duration::from_secs(180));
    let log = log_of(&server, &id);
    assert_eq!(run["state"], "FINISHED", "{run}\n{log}");
    assert!(log.contains("Installing hashicorp/null v2.1.2"), "{log}");
    assert!(
        log.contains("Plan: 1 to add, 0 to change, 0 to destroy"),
        "{log}"
    );
    assert!(log.contains("hello from local-exec in /workspace"), "{log}");
    assert!(
        log.contains("Apply complete! Resources: 1 added, 0 changed, 0 destroyed."),
        "{log}"
    );
}

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
