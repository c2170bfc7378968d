//! The Docker executor against the real Docker engine: a container per run,
//! what the run sees (user, environment, mounts, limits, network), stop,
//! timeouts, cleanup, settings refused at start, and the reaping of a
//! crashed launcher's containers. Image handling is in docker_images.rs, the
//! launcher image in docker_launcher_image.rs; shared helpers in docker/.
//!
//! Needs docker; the images come from `scripts/build-images.sh` (the test
//! setup runs it), except the tiny image the smoke test builds itself. With
//! CI=true a missing docker fails these tests instead of skipping them.

mod docker;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use docker::*;
use support::*;

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
