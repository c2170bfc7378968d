//! Logs: streamed live, complete and in order, across reconnects and a
//! control plane restart, and large ones without blocking the run.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn expected_lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

#[test]
fn logs_follow_streams_live_and_ends_with_the_run() {
    let server = Server::start();
    let pool = server.create_pool("tail");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let id = server.submit(
        "tail",
        &[
            "sh",
            "-c",
            "for i in $(seq 1 30); do echo line $i; sleep 0.05; done",
        ],
    );

    let mut follower = Command::new(gantry_bin())
        .args(["run", "logs", &id, "-f"])
        .env("GANTRY_URL", &server.url)
        .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert_eq!(first, "line 1\n");
    // The first line arrives while the run is still going.
    assert_ne!(server.run(&id)["state"], "FINISHED", "the log is live");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(follower.wait().unwrap().success());
    assert_eq!(first + &rest, expected_lines(30));
    assert_eq!(server.run(&id)["state"], "FINISHED");
}

#[test]
#[ignore = "slow: restarts the control plane mid-run (~10 s)"]
fn no_line_is_lost_or_doubled_across_a_control_plane_restart() {
    let mut server = Server::start_with("15s");
    let pool = server.create_pool("restart");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let id = server.submit(
        "restart",
        &[
            "sh",
            "-c",
            "for i in $(seq 1 400); do echo line $i; sleep 0.01; done",
        ],
    );
    wait_for("some output", Duration::from_secs(10), || {
        (!server.logs(&id).is_empty()).then_some(())
    });

    // SIGKILL the control plane twice mid-run: every connection drops.
    server.restart();
    std::thread::sleep(Duration::from_millis(700));
    server.restart();

    let run = server.wait_run_end(&id, Duration::from_secs(30));
    assert_eq!(run["state"], "FINISHED", "{run}");
    let log = String::from_utf8(server.logs(&id)).unwrap();
    assert_eq!(
        log,
        expected_lines(400),
        "complete, in order, no duplicates"
    );
    assert!(
        launcher.proc.log().contains("retrying") || launcher.proc.log().contains("failed"),
        "the restarts were felt"
    );
}

#[test]
#[ignore = "slow: 100 MB of output"]
fn a_hundred_megabytes_of_output_neither_blocks_the_run_nor_fills_memory() {
    let server = Server::start_with("30s");
    let pool = server.create_pool("big");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    // 1,048,576 lines of 100 bytes: 100 MiB.
    let script = "yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -n 1048576";
    let id = server.submit("big", &["sh", "-c", script]);
    let mut peak_rss_kb = 0u64;
    let run = wait_for("the big run to end", Duration::from_secs(300), || {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", launcher.proc.pid()))
        {
            if let Some(line) = status.lines().find(|l| l.starts_with("VmRSS:")) {
                let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                peak_rss_kb = peak_rss_kb.max(kb);
            }
        }
        let run = server.run(&id);
        ["FINISHED", "FAILED"]
            .contains(&run["state"].as_str().unwrap())
            .then_some(run)
    });
    assert_eq!(run["state"], "FINISHED", "{run}");
    let log = server.logs(&id);
    assert_eq!(log.len(), 100 * 1024 * 1024);
    assert!(log.chunks(100).all(|line| line.ends_with(b"78\n")));
    assert!(
        peak_rss_kb < 80 * 1024,
        "launcher RSS peaked at {peak_rss_kb} kB"
    );
}

/// A worker lost with a chunk never uploaded leaves a gap: the ended run's
/// log is then not "complete", the gap is named, and `run logs` shows what
/// is stored on both sides of it, saying what is missing.
#[test]
fn an_ended_runs_log_with_a_gap_is_reported_incomplete_not_complete() {
    let server = Server::start_with("1s");
    let pool = server.create_pool("gappy");
    let session = register_raw(&server, &pool, "gap-test-nonce-0001");
    let id = server.submit("gappy", &["true"]);
    let http = server.http();
    let polled: serde_json::Value = http
        .post(format!("{}/api/v1/worker/poll", server.url))
        .bearer_auth(&session)
        .json(&serde_json::json!({"free_slots": 1, "wait_ms": 5000}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let lease = polled["leases"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (seq, text) in [(0, "first\n"), (2, "third\n")] {
        let response = http
            .put(format!("{}/api/v1/worker/runs/{id}/logs/{seq}", server.url))
            .bearer_auth(&session)
            .header("gantry-lease", &lease)
            .body(text)
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    // The worker goes silent: its run is reaped with chunk 1 never sent.
    let run = server.wait_run_end(&id, Duration::from_secs(10));
    assert_eq!(run["state"], "FAILED");

    let response = http
        .get(format!("{}/api/v1/runs/{id}/logs?from=0", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(response.headers()["gantry-log-complete"], "false");
    assert_eq!(response.headers()["gantry-log-gap"], "1-2");
    assert_eq!(response.text().unwrap(), "first\n");

    let shown = server.cli(&["run", "logs", &id]);
    assert!(shown.status.success(), "{shown:?}");
    assert_eq!(String::from_utf8_lossy(&shown.stdout), "first\nthird\n");
    let said = String::from_utf8_lossy(&shown.stderr);
    assert!(said.contains("missing chunks 1 to 1"), "{said}");
}
