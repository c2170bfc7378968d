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
