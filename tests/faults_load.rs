//! The fault suite, under load: 200 task runs on 8 launchers while the
//! control plane is killed (SIGKILL) and started again on the same data
//! directory three times. Every run must end exactly once, FINISHED; no run
//! may be leased twice (one PREPARING in its timeline, one "run started"
//! across all launchers); and every run's log must be exactly the numbered
//! lines it printed, in order, none lost or doubled.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const RUNS: usize = 200;
const LAUNCHERS: usize = 8;
const LINES: usize = 20;
const RESTARTS: usize = 3;

const TERMINAL: [&str; 5] = ["FINISHED", "FAILED", "STOPPED", "CANCELED", "DISCARDED"];

fn submit(http: &reqwest::blocking::Client, server: &Server, pool: &str, script: &str) -> String {
    let response = http
        .post(format!("{}/api/v1/runs", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "pool": pool, "command": ["sh", "-c", script] }))
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "submit: {}",
        response.status()
    );
    let run: Value = response.json().unwrap();
    run["id"].as_str().unwrap().to_string()
}

/// The run's log as stored, and whether the control plane calls it complete.
fn log_of(http: &reqwest::blocking::Client, server: &Server, id: &str) -> (String, bool) {
    let response = http
        .get(format!("{}/api/v1/runs/{id}/logs", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "logs of {id}");
    let complete = response
        .headers()
        .get("gantry-log-complete")
        .is_some_and(|v| v == "true");
    (response.text().unwrap(), complete)
}

/// Every run of the pool, by ID, with its timeline (one request).
fn runs_of(
    http: &reqwest::blocking::Client,
    server: &Server,
    pool: &str,
) -> HashMap<String, Value> {
    let response = http
        .get(format!("{}/api/v1/runs?pool={pool}&limit=1000", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "list runs: {}",
        response.status()
    );
    let runs: Vec<Value> = response.json().unwrap();
    runs.into_iter()
        .map(|run| (run["id"].as_str().unwrap().to_string(), run))
        .collect()
}

fn is_ended(run: &Value) -> bool {
    TERMINAL.iter().any(|t| run["state"] == *t)
}

/// Each launcher's log lines with this message, by run ID.
fn launcher_events(launchers: &[Launcher], message: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for launcher in launchers {
        for line in launcher.proc.log().lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if event["message"] == message {
                if let Some(run_id) = event["run_id"].as_str() {
                    *seen.entry(run_id.to_string()).or_insert(0) += 1;
                }
            }
        }
    }
    seen
}

#[test]
#[ignore = "slow: faults, 200 runs, control-plane restarts"]
fn two_hundred_runs_on_8_launchers_through_3_control_plane_restarts_end_once_with_whole_logs() {
    let mut server = Server::start_with("3s");
    let pool = server.create_pool("load");
    let script =
        format!("for i in $(seq 1 {LINES}); do echo \"$GANTRY_RUN_ID line $i\"; sleep 0.05; done");
    // All queued first (four at a time), then the launchers start on them.
    let http = server.http();
    let ids: Vec<String> = std::thread::scope(|scope| {
        let submitters: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..RUNS / 4)
                        .map(|_| submit(&http, &server, "load", &script))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        submitters
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    let started = Instant::now();
    let launchers: Vec<Launcher> = (0..LAUNCHERS)
        .map(|_| Launcher::start(&pool, &[("GANTRY_MAX_CONCURRENT_RUNS", "2")]))
        .collect();

    // Kill the control plane while runs are in flight, three times, a few
    // seconds down each time; 3, 3.5 and 4 s apart, to hit the runs (which
    // move in waves) at different points: mid-run, finishing, being claimed.
    for restart in 1..=RESTARTS {
        std::thread::sleep(Duration::from_millis(2500 + 500 * restart as u64));
        let done = runs_of(&http, &server, "load")
            .values()
            .filter(|run| is_ended(run))
            .count();
        assert!(
            done < RUNS,
            "restart {restart} would come after every run ended: the test proves nothing"
        );
        eprintln!(
            "restart {restart} at {:?}: {done} of {RUNS} runs ended",
            started.elapsed()
        );
        server.restart_after(Duration::from_secs(2));
    }

    let runs = wait_for("every run to end", Duration::from_secs(90), || {
        let runs = runs_of(&http, &server, "load");
        (runs.len() == RUNS && runs.values().all(is_ended)).then_some(runs)
    });
    let all_ended = started.elapsed();

    let started_by = launcher_events(&launchers, "run started");
    let finished_by = launcher_events(&launchers, "run finished");
    for id in &ids {
        let run = &runs[id];
        let states: Vec<&str> = run["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"].as_str().unwrap())
            .collect();
        assert_eq!(run["state"], "FINISHED", "run {id}: {run:#}");
        assert_eq!(
            states.iter().filter(|s| TERMINAL.contains(s)).count(),
            1,
            "run {id} ended once: {states:?}"
        );
        assert_eq!(
            states.iter().filter(|s| **s == "PREPARING").count(),
            1,
            "run {id} was leased once: {states:?}"
        );
        assert_eq!(started_by.get(id), Some(&1), "run {id} started once");
        assert_eq!(finished_by.get(id), Some(&1), "run {id} finished once");

        let (log, complete) = log_of(&http, &server, id);
        let expected: String = (1..=LINES).map(|i| format!("{id} line {i}\n")).collect();
        assert_eq!(log, expected, "run {id}'s log, every line once, in order");
        assert!(complete, "run {id}'s log is complete");
    }
    eprintln!(
        "{RUNS} runs on {LAUNCHERS} launchers through {RESTARTS} restarts: all FINISHED after {all_ended:?}, \
         each leased, started and finished once, every log whole"
    );
}
