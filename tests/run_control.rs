//! What a run sees and how it ends: environment, exit codes, stop, timeouts.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn a_run_gets_a_clean_environment_and_its_exit_code_decides_its_state() {
    let server = Server::start();
    let pool = server.create_pool("env");
    let launcher = Launcher::start(
        &pool,
        &[
            ("GANTRY_PASSTHROUGH_ENVS", "TEAM_SETTING"),
            ("TEAM_SETTING", "passed"),
            ("LAUNCHER_ONLY", "hidden"),
            ("HTTPS_PROXY", "http://proxy.invalid:3128"),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
    );
    launcher.wait_registered();

    let output = server.cli(&[
        "run",
        "submit",
        "--pool",
        "env",
        "--env",
        "GREETING=hi",
        "--output",
        "json",
        "--",
        "sh",
        "-c",
        "env | sort",
    ]);
    assert!(output.status.success());
    let id = serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        server.wait_run_end(&id, Duration::from_secs(10))["state"],
        "FINISHED"
    );
    let env = String::from_utf8(server.logs(&id)).unwrap();
    assert!(env.contains("GREETING=hi"), "{env}");
    assert!(env.contains("TEAM_SETTING=passed"), "{env}");
    assert!(
        env.contains("HTTPS_PROXY=http://proxy.invalid:3128"),
        "proxy settings reach runs: {env}"
    );
    assert!(env.contains(&format!("GANTRY_RUN_ID={id}")), "{env}");
    assert!(!env.contains("LAUNCHER_ONLY"), "{env}");
    assert!(
        !env.contains("GANTRY_TOKEN") && !env.contains("GANTRY_POOL_PRIVATE_KEY"),
        "credentials leaked: {env}"
    );

    let id = server.submit("env", &["sh", "-c", "echo failing; exit 7"]);
    let run = server.wait_run_end(&id, Duration::from_secs(10));
    assert_eq!(run["state"], "FAILED");
    assert_eq!(run["exit_code"], 7);
    assert_eq!(run["reason"], "the command exited with code 7");

    let id = server.submit("env", &["/no/such/program"]);
    let run = server.wait_run_end(&id, Duration::from_secs(10));
    assert_eq!(run["state"], "FAILED");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("cannot start `/no/such/program`"),
        "{run}"
    );
    assert!(String::from_utf8(server.logs(&id))
        .unwrap()
        .contains("cannot start"));

    // `run wait` exits by outcome.
    assert_eq!(server.cli(&["run", "wait", &id]).status.code(), Some(10));
}

#[test]
fn stop_kills_the_whole_process_group() {
    let server = Server::start();
    let pool = server.create_pool("stoppable");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // A run that starts a background child, then ignores TERM: only the
    // group KILL after the grace period ends it.
    let script = format!(
        "trap '' TERM; sleep 300 & echo $! > {p}; echo $$ >> {p}; echo started; wait",
        p = pids.display()
    );
    let id = server.submit("stoppable", &["sh", "-c", &script]);
    wait_for("the run to start", Duration::from_secs(10), || {
        String::from_utf8(server.logs(&id))
            .unwrap()
            .contains("started")
            .then_some(())
    });

    let started = Instant::now();
    let stopped = server.cli_json(&["run", "stop", &id]);
    assert_eq!(stopped["stop_requested"], true);
    let run = server.wait_run_end(&id, Duration::from_secs(15));
    assert_eq!(run["state"], "STOPPED", "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopped within the 2s grace plus slack: {:?}",
        started.elapsed()
    );
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "process {pid} survived the stop"
        );
    }
    assert!(String::from_utf8(server.logs(&id))
        .unwrap()
        .contains("stopping the run"));

    // Stopping a queued run cancels it; stopping an ended run is a conflict.
    drop(launcher);
    let queued = server.submit("stoppable", &["true"]);
    assert_eq!(
        server.cli_json(&["run", "stop", &queued])["state"],
        "CANCELED"
    );
    let again = server.cli(&["run", "stop", &queued]);
    assert_eq!(again.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended"));
}

fn is_zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[test]
fn run_timeout_and_log_inactivity_timeout_kill_the_run() {
    let server = Server::start();
    let pool = server.create_pool("timeouts");
    let launcher = Launcher::start(
        &pool,
        &[("GANTRY_RUN_TIMEOUT", "2s"), ("GANTRY_LOGS_TIMEOUT", "1h")],
    );
    launcher.wait_registered();
    let id = server.submit(
        "timeouts",
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(15));
    assert_eq!(run["state"], "FAILED");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 2s (GANTRY_RUN_TIMEOUT)"),
        "{run}"
    );
    drop(launcher);

    let launcher = Launcher::start(
        &pool,
        &[("GANTRY_RUN_TIMEOUT", "1h"), ("GANTRY_LOGS_TIMEOUT", "2s")],
    );
    launcher.wait_registered();
    let id = server.submit("timeouts", &["sh", "-c", "echo one; sleep 60"]);
    let run = server.wait_run_end(&id, Duration::from_secs(15));
    assert_eq!(run["state"], "FAILED");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("printed nothing for 2s (GANTRY_LOGS_TIMEOUT)"),
        "{run}"
    );
    let log = String::from_utf8(server.logs(&id)).unwrap();
    assert!(
        log.starts_with("one\n") && log.contains("GANTRY_LOGS_TIMEOUT"),
        "{log}"
    );
}

/// A pending stop ends a poll early once, not on every poll: a launcher
/// that says it already acts on the stop waits the poll out, so it does not
/// spin while its run winds down.
#[test]
fn a_pending_stop_wakes_a_poll_once_not_in_a_loop() {
    let server = Server::start_with("30s");
    let pool = server.create_pool("spin");
    let session = register_raw(&server, &pool, "spin-test-nonce-00001");
    let id = server.submit("spin", &["sleep", "60"]);
    let http = server.http();
    let poll = |known: serde_json::Value, slots: u32| -> (serde_json::Value, Duration) {
        let started = std::time::Instant::now();
        let body: serde_json::Value = http
            .post(format!("{}/api/v1/worker/poll", server.url))
            .bearer_auth(&session)
            .json(&serde_json::json!({"free_slots": slots, "wait_ms": 1500, "known": known}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        (body, started.elapsed())
    };
    let (leased, _) = poll(serde_json::json!({}), 1);
    assert_eq!(leased["leases"][0]["run_id"], id.as_str());
    server.cli_json(&["run", "stop", &id]);

    let (news, took) = poll(serde_json::json!({}), 0);
    assert_eq!(news["instructions"]["stop"][0], id.as_str());
    assert!(
        took < Duration::from_millis(1000),
        "news answers at once: {took:?}"
    );

    let (known, took) = poll(serde_json::json!({"stop": [id]}), 0);
    assert_eq!(known["instructions"]["stop"][0], id.as_str(), "still told");
    assert!(
        took >= Duration::from_millis(1200),
        "a known stop does not end the poll early: {took:?}"
    );
}
