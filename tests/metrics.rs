//! `GET /metrics` on a real control plane: the pool gauges count only what
//! a worker could take now (not UNCONFIRMED runs, not runs QUEUED behind
//! another on their stack) and count drained workers apart; the counters
//! and histograms move as runs are leased, log and end; the output passes
//! `promtool check metrics`; `--metrics-listen` serves the same without a
//! token; and deploy/grafana/gantry.json names only metrics a real scrape
//! has.

mod support;
mod tf;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;
use tf::*;

fn scrape(server: &Server) -> String {
    let response = server
        .http()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    response.text().unwrap()
}

/// The value of the sample `name{labels}` whose labels include all of `with`.
fn sample(text: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            with.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn pool_gauges(text: &str, pool: &str) -> [f64; 4] {
    let labels = [("worker_pool_name", pool)];
    [
        "gantry_worker_pool_runs_pending",
        "gantry_worker_pool_workers",
        "gantry_worker_pool_workers_busy",
        "gantry_worker_pool_workers_drained",
    ]
    .map(|name| sample(text, name, &labels).unwrap_or_else(|| panic!("{name} missing:\n{text}")))
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Metric names in a scrape, with the suffixes a query may use.
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Every metric-looking name in the dashboard's strings (queries,
/// template variables).
fn dashboard_names(dashboard: &Value, names: &mut BTreeSet<String>) {
    match dashboard {
        Value::String(text) => {
            for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("gantry_") || token.starts_with("process_") {
                    names.insert(token.to_string());
                }
            }
        }
        Value::Object(map) => map.values().for_each(|v| dashboard_names(v, names)),
        Value::Array(items) => items.iter().for_each(|v| dashboard_names(v, names)),
        _ => {}
    }
}

#[test]
#[ignore = "slow: terraform, promtool"]
fn gauges_count_only_runs_a_worker_could_take_and_the_output_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    if !require_tool("promtool") {
        return;
    }
    let source = module(dir.path());
    let open_port = free_port();
    let open_listen = format!("127.0.0.1:{open_port}");
    let server = Server::start_with_args("10s", &["--metrics-listen", &open_listen]);
    let pool = server.create_pool("tf");
    let launcher = start_launcher(&pool, &env);
    create_stack(&server, "web", "tf", &source, &[]);

    // A tracked run plans and waits for a person: UNCONFIRMED, no worker.
    let planned = trigger(&server, "web", "tracked");
    server.wait_state(&planned, "UNCONFIRMED", LONG);
    // The next run on the stack waits behind it: QUEUED.
    let queued = trigger(&server, "web", "proposed");
    assert_eq!(server.run(&queued)["state"], "QUEUED");
    // The only worker is drained: a task run stays READY.
    let worker = server.cli_json(&["worker", "list", "--pool", "tf"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.cli_json(&["worker", "drain", &worker]);
    let task = server.submit("tf", &["sh", "-c", "echo metrics-log-line"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.run(&task)["state"], "READY");

    let text = scrape(&server);
    // pending, workers, busy, drained: one READY run; the drained worker
    // is listed as a worker and as drained, never as capacity.
    assert_eq!(pool_gauges(&text, "tf"), [1.0, 1.0, 0.0, 1.0], "{text}");
    promtool_check(&text);
    let demand = server.api_get("/pools/tf/demand");
    assert_eq!(demand["runs_pending"], 1);
    assert_eq!(demand["workers_drained"], 1);
    assert_eq!(demand["worker_list"][0]["state"], "drained");

    // Undrained, it takes the task run; the run ends; the counters move.
    server.cli_json(&["worker", "undrain", &worker]);
    let ended = server.wait_run_end(&task, LONG);
    assert_eq!(ended["state"], "FINISHED");
    let text = wait_for("the run's metrics", Duration::from_secs(10), || {
        let text = scrape(&server);
        sample(
            &text,
            "gantry_run_duration_seconds_count",
            &[("run_type", "task"), ("state", "FINISHED")],
        )
        .is_some()
        .then_some(text)
    });
    assert_eq!(pool_gauges(&text, "tf"), [0.0, 1.0, 0.0, 0.0], "{text}");
    let ended_count = |state: &str| {
        sample(
            &text,
            "gantry_runs_ended_total",
            &[("run_type", "task"), ("state", state)],
        )
    };
    assert_eq!(ended_count("FINISHED"), Some(1.0));
    // The planned run's plan phase was leased too: two dispatches at least.
    let dispatched: f64 = ["task", "tracked"]
        .iter()
        .filter_map(|t| {
            sample(
                &text,
                "gantry_run_dispatch_latency_seconds_count",
                &[("run_type", t)],
            )
        })
        .sum();
    assert!(dispatched >= 2.0, "{text}");
    for phase in ["QUEUED", "READY", "PREPARING"] {
        assert!(
            sample(
                &text,
                "gantry_run_phase_duration_seconds_count",
                &[("run_type", "task"), ("phase", phase)]
            )
            .is_some(),
            "no {phase} phase observed:\n{text}"
        );
    }
    assert!(
        sample(&text, "gantry_log_bytes_total", &[]).unwrap() >= "metrics-log-line".len() as f64
    );
    assert!(
        sample(
            &text,
            "gantry_http_requests_total",
            &[
                ("route", "/api/v1/runs/{run}"),
                ("method", "GET"),
                ("status", "200")
            ]
        )
        .unwrap()
            >= 1.0,
        "requests are counted by route template:\n{text}"
    );
    assert!(
        !text.contains(&format!("route=\"/api/v1/runs/{task}\"")),
        "never by raw path"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&text, name, &[]).unwrap() >= 0.0, "{name}");
    }
    assert!(sample(&text, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    promtool_check(&text);

    // Without a token: 401 on the API port, served on --metrics-listen.
    let response = server
        .http()
        .get(format!("{}/metrics", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    let open = reqwest::blocking::get(format!("http://{open_listen}/metrics")).unwrap();
    assert_eq!(open.status(), 200);
    let open_text = open.text().unwrap();
    assert_eq!(pool_gauges(&open_text, "tf"), [0.0, 1.0, 0.0, 0.0]);
    // OpenMetrics when asked for.
    let om = server
        .http()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.text().unwrap().ends_with("# EOF\n"));

    // The Grafana dashboard: valid JSON, and every metric it queries exists.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/gantry.json")).unwrap(),
    )
    .expect("deploy/grafana/gantry.json is valid JSON");
    let mut used = BTreeSet::new();
    dashboard_names(&dashboard, &mut used);
    assert!(
        used.len() >= 6,
        "the dashboard queries the metrics: {used:?}"
    );
    let scraped = scraped_names(&text);
    let unknown: Vec<_> = used.difference(&scraped).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics /metrics lacks: {unknown:?}"
    );
    drop(launcher);
}
