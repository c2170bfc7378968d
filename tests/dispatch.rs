//! Dispatch: every run to exactly one worker, however many compete.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use support::*;

#[test]
fn many_launchers_competing_never_run_a_run_twice() {
    let server = Server::start();
    let pool = server.create_pool("busy");
    let launchers: Vec<Launcher> = (0..6)
        .map(|i| {
            Launcher::start(
                &pool,
                &[
                    ("GANTRY_MAX_CONCURRENT_RUNS", "2"),
                    ("GANTRY_METADATA_index", &i.to_string()),
                ],
            )
        })
        .collect();
    for launcher in &launchers {
        launcher.wait_registered();
    }

    // Each run appends its ID to a shared file: a run executed twice would
    // show up twice.
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let script = format!(
        "echo $GANTRY_RUN_ID >> {}; echo ran $GANTRY_RUN_ID",
        ledger.display()
    );
    let runs: Vec<String> = (0..60)
        .map(|_| server.submit("busy", &["sh", "-c", &script]))
        .collect();

    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for id in &runs {
        let run = server.wait_run_end(id, Duration::from_secs(60));
        assert_eq!(run["state"], "FINISHED", "{run}");
        let preparing = run["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "PREPARING")
            .count();
        assert_eq!(preparing, 1, "leased once: {run}");
        *per_worker
            .entry(run["worker_id"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert_eq!(server.logs(id), format!("ran {id}\n").into_bytes());
    }
    let ledger = std::fs::read_to_string(&ledger).unwrap();
    let lines: Vec<&str> = ledger.lines().collect();
    let unique: HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(lines.len(), 60, "every run ran");
    assert_eq!(unique.len(), 60, "no run ran twice");
    assert!(
        per_worker.len() >= 3,
        "work spread over workers: {per_worker:?}"
    );

    let workers: Value = server.cli_json(&["worker", "list"]);
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 6);
    for worker in workers {
        for field in ["id", "pool", "state", "version", "tags"] {
            assert!(!worker[field].is_null(), "worker lacks {field}: {worker}");
        }
        assert_eq!(worker["pool"], "busy");
        assert_eq!(worker["version"], gantry_wire::VERSION);
        assert!(worker["tags"]["index"].is_string());
    }
}

#[test]
fn a_launcher_runs_at_most_its_concurrency() {
    let server = Server::start();
    let pool = server.create_pool("narrow");
    let launcher = Launcher::start(&pool, &[("GANTRY_MAX_CONCURRENT_RUNS", "2")]);
    launcher.wait_registered();
    // Each run records how many runs are in flight as it starts (a marker
    // directory per run), so the check does not depend on timing.
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let counts = dir.path().join("counts");
    let script = format!(
        "mkdir {live}/$GANTRY_RUN_ID; ls {live} | wc -l >> {counts}; sleep 1.5; rmdir {live}/$GANTRY_RUN_ID",
        live = live.display(),
        counts = counts.display()
    );
    let runs: Vec<String> = (0..5)
        .map(|_| server.submit("narrow", &["sh", "-c", &script]))
        .collect();
    for id in &runs {
        assert_eq!(
            server.wait_run_end(id, Duration::from_secs(30))["state"],
            "FINISHED"
        );
    }
    let counts: Vec<u32> = std::fs::read_to_string(&counts)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 5);
    assert_eq!(
        counts.iter().max(),
        Some(&2),
        "never more than 2 at once, and 2 were: {counts:?}"
    );
}

#[test]
fn every_transition_is_recorded_with_its_time() {
    let server = Server::start();
    let pool = server.create_pool("timeline");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let id = server.submit("timeline", &["true"]);
    let run = server.wait_run_end(&id, Duration::from_secs(10));
    let states: Vec<&str> = run["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["QUEUED", "READY", "PREPARING", "APPLYING", "FINISHED"]
    );
    let times: Vec<&str> = run["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "in time order");
    assert!(times[0].ends_with('Z'));

    let shown = server.cli(&["run", "show", &id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("state:     FINISHED") && text.contains("APPLYING"),
        "{text}"
    );
    let listed = server.cli_json(&["run", "list", "--pool", "timeline"]);
    assert_eq!(listed[0]["id"], id.as_str());
}
