//! Three control-plane replicas on one PostgreSQL database, behind a real
//! haproxy: launchers and the CLI only ever talk to the load balancer.
//! Whatever happens to a replica, no run is lost or leased twice, and every
//! log is complete and in order.
//!
//! Needs PostgreSQL and haproxy (scripts/install-test-deps.sh); a test
//! skips without them, except under CI=true, where it fails.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{
    free_port, gantry_bin, register_raw, require_tool, wait_for, Launcher, PostgresDatabase, Proc,
    Server, ADMIN_TOKEN,
};

const LEASE: &str = "3s";

/// N replicas and the haproxy in front of them.
struct Replicas {
    replicas: Vec<Server>,
    _haproxy: Proc,
    url: String,
    _dir: tempfile::TempDir,
}

impl Replicas {
    fn tools_present() -> bool {
        require_tool("haproxy")
            && require_tool(&gantry_test_postgres::bin("initdb").to_string_lossy())
    }

    fn start(n: usize) -> Option<Replicas> {
        if !Replicas::tools_present() {
            return None;
        }
        let database = PostgresDatabase::new();
        let lb_port = free_port();
        let url = format!("http://127.0.0.1:{lb_port}");
        let public_url = ["--public-url", url.as_str()];
        // Started together: they also race for the migrations and the admin token.
        let replicas: Vec<Server> = std::thread::scope(|scope| {
            let starting: Vec<_> = (0..n)
                .map(|_| scope.spawn(|| Server::start_replica(&database, LEASE, &public_url)))
                .collect();
            starting.into_iter().map(|s| s.join().unwrap()).collect()
        });
        Some(Replicas::behind_haproxy(replicas, lb_port))
    }

    /// Puts haproxy, listening on `lb_port`, in front of `replicas`.
    fn behind_haproxy(replicas: Vec<Server>, lb_port: u16) -> Replicas {
        let url = format!("http://127.0.0.1:{lb_port}");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(lb_port, &replicas)).unwrap();
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&config);
        let haproxy = Proc::spawn_command(command);
        let replicas = Replicas {
            replicas,
            _haproxy: haproxy,
            url,
            _dir: dir,
        };
        wait_for("haproxy to route", Duration::from_secs(20), || {
            replicas
                .cli(&["pool", "list"])
                .status
                .success()
                .then_some(())
        });
        replicas
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(gantry_bin())
            .args(args)
            .env("GANTRY_URL", &self.url)
            .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let output = self.cli(&all);
        assert!(
            output.status.success(),
            "gantry {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// A pool made through the load balancer (its token names the balancer).
    fn create_pool(&self, name: &str) -> support::Pool {
        let generated = gantry_pki::generate(2048, name).unwrap();
        let csr = self._dir.path().join(format!("{name}.csr"));
        std::fs::write(&csr, &generated.csr_pem).unwrap();
        let created = self.cli_json(&["pool", "create", name, "--csr", csr.to_str().unwrap()]);
        support::Pool {
            name: name.into(),
            id: created["id"].as_str().unwrap().into(),
            token: created["token"].as_str().unwrap().into(),
            private_key_pem: generated.private_key_pem,
        }
    }

    fn submit(&self, pool: &str, script: &str) -> String {
        let args = [
            "run", "submit", "--pool", pool, "--output", "json", "--", "sh", "-c", script,
        ];
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let run: Value = serde_json::from_slice(&output.stdout).unwrap();
        run["id"].as_str().unwrap().to_string()
    }

    fn run(&self, id: &str) -> Value {
        self.cli_json(&["run", "show", id])
    }

    fn logs(&self, id: &str) -> String {
        let output = self.cli(&["run", "logs", id]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits for every run to end; asserts each FINISHED after exactly one
    /// lease, with its whole log in order.
    fn assert_all_finished_once(&self, runs: &[String], lines: usize, timeout: Duration) {
        for id in runs {
            let run = wait_for(&format!("run {id} to end"), timeout, || {
                let run = self.run(id);
                let state = run["state"].as_str().unwrap_or_default().to_string();
                ["FINISHED", "FAILED", "STOPPED", "CANCELED"]
                    .contains(&state.as_str())
                    .then_some(run)
            });
            assert_eq!(run["state"], "FINISHED", "run {id}: {run:#}");
            let leased = run["transitions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["state"] == "PREPARING")
                .count();
            assert_eq!(leased, 1, "run {id} was leased {leased} times: {run:#}");
            let log = self.logs(id);
            let expected: Vec<String> = (1..=lines).map(|i| format!("line {i}")).collect();
            let got: Vec<&str> = log.lines().filter(|l| l.starts_with("line ")).collect();
            assert_eq!(got, expected, "run {id}'s log is complete and in order");
        }
    }
}

/// Two replicas on a new database, without a balancer, for tests that
/// choose which one each call goes to (the database is dropped last).
/// `None` without PostgreSQL.
fn two_replicas() -> Option<(Server, Server, PostgresDatabase)> {
    if !require_tool(&gantry_test_postgres::bin("initdb").to_string_lossy()) {
        return None;
    }
    let database = PostgresDatabase::new();
    let a = Server::start_replica(&database, LEASE, &[]);
    let b = Server::start_replica(&database, LEASE, &[]);
    Some((a, b, database))
}

fn haproxy_config(port: u16, replicas: &[Server]) -> String {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| format!("    server r{i} {} check\n", r.addr()))
        .collect();
    // The docs' configuration (docs/scaling-out.md), with faster checks.
    format!(
        "global\n    maxconn 4096\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 70s\n    timeout server 70s\n\
         \x20   option redispatch\n    retries 3\n    retry-on conn-failure\n\
         frontend gantry\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
         backend replicas\n    balance roundrobin\n    option httpchk GET /api/v1/ready\n\
         \x20   http-check expect status 200\n    default-server inter 300ms fall 2 rise 1\n{servers}"
    )
}

/// A script printing `line 1` … `line N`, `pause` seconds apart.
fn numbered(lines: usize, pause: &str) -> String {
    format!("i=1; while [ $i -le {lines} ]; do echo \"line $i\"; i=$((i+1)); sleep {pause}; done")
}

fn launchers(pool: &support::Pool, n: usize, slots: &str) -> Vec<Launcher> {
    let launchers: Vec<Launcher> = (0..n)
        .map(|_| Launcher::start(pool, &[("GANTRY_MAX_CONCURRENT_RUNS", slots)]))
        .collect();
    for launcher in &launchers {
        launcher.wait_registered();
    }
    launchers
}

#[test]
#[ignore = "needs PostgreSQL and haproxy (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
fn replicas_starting_together_share_one_schema_and_one_admin_token() {
    let Some(cluster) = Replicas::start(3) else {
        return;
    };
    // Every replica answers with the same data, whichever one the balancer picks.
    cluster.create_pool("shared");
    for replica in &cluster.replicas {
        let pools = replica.cli_json(&["pool", "list"]);
        assert_eq!(pools.as_array().unwrap().len(), 1, "{pools:#}");
        let tokens = replica.cli_json(&["token", "list"]);
        assert_eq!(
            tokens.as_array().unwrap().len(),
            1,
            "one admin token: {tokens:#}"
        );
    }
    let url = &cluster.replicas[0].postgres.as_ref().unwrap().url;
    let migrations = gantry_test_postgres::psql(url, "SELECT count(*) FROM _sqlx_migrations");
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/store/migrations/postgres"
    ))
    .unwrap()
    .count();
    assert_eq!(
        migrations,
        files.to_string(),
        "each migration was applied once"
    );
}

#[test]
#[ignore = "needs PostgreSQL and haproxy (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
fn a_replica_killed_mid_run_loses_no_run_and_no_log_line() {
    let Some(mut cluster) = Replicas::start(3) else {
        return;
    };
    let pool = cluster.create_pool("p");
    let _launchers = launchers(&pool, 2, "3");
    let runs: Vec<String> = (0..6)
        .map(|_| cluster.submit(&pool.name, &numbered(40, "0.05")))
        .collect();
    wait_for("runs to start", Duration::from_secs(30), || {
        runs.iter()
            .all(|id| cluster.run(id)["state"] != "READY")
            .then_some(())
    });
    // Kill the replica that holds the singleton duties, or any: both matter.
    let victim = &mut cluster.replicas[0];
    victim.proc.signal(nix::sys::signal::Signal::SIGKILL);
    cluster.assert_all_finished_once(&runs, 40, Duration::from_secs(60));
}

#[test]
#[ignore = "needs PostgreSQL and haproxy (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
fn a_rolling_restart_with_100_runs_in_flight_loses_none() {
    let Some(mut cluster) = Replicas::start(3) else {
        return;
    };
    let pool = cluster.create_pool("p");
    let _launchers = launchers(&pool, 4, "8");
    let runs: Vec<String> = (0..100)
        .map(|_| cluster.submit(&pool.name, &numbered(5, "0.2")))
        .collect();
    for i in 0..cluster.replicas.len() {
        std::thread::sleep(Duration::from_millis(700));
        // A deploy: SIGTERM, then the new version starts on the same port.
        let replica = &mut cluster.replicas[i];
        replica.proc.signal(nix::sys::signal::Signal::SIGTERM);
        replica.proc.wait_exit(Duration::from_secs(10));
        replica.restart();
    }
    cluster.assert_all_finished_once(&runs, 5, Duration::from_secs(120));
}

#[test]
#[ignore = "needs PostgreSQL, haproxy and network namespaces (root); scripts/test-all.sh runs it"]
fn a_replica_cut_off_from_the_database_hands_over_its_duties_and_loses_no_run() {
    if !Replicas::tools_present() {
        return;
    }
    let Some(netns) = support::netns::Netns::create() else {
        return;
    };
    // Replica C lives in the namespace; it reaches PostgreSQL and haproxy
    // reaches it over the veth pair, which the test cuts.
    let postgres = gantry_test_postgres::Cluster::start_reachable_from(
        &[&netns.host_ip],
        &[&format!("{}/32", netns.ns_ip)],
    )
    .unwrap();
    let secrets_key = gantry_pki::at_rest::SecretsKeyring::generate_key();
    let on_host = PostgresDatabase {
        url: postgres.database_url("127.0.0.1"),
        secrets_key: secrets_key.clone(),
    };
    let in_namespace = PostgresDatabase {
        url: on_host.url.replace("127.0.0.1", &netns.host_ip),
        secrets_key,
    };
    let lease = "6s";
    let lb_port = free_port();
    let public_url = format!("http://127.0.0.1:{lb_port}");
    let flags = ["--public-url", public_url.as_str()];
    // C starts first, so it is the one doing the singleton duties.
    let c = Server::start_replica_in(&netns, &in_namespace, lease, &flags);
    let duties = "now does the singleton duties";
    wait_for("C to take the duties", Duration::from_secs(20), || {
        c.proc.log().contains(duties).then_some(())
    });
    let a = Server::start_replica(&on_host, lease, &flags);
    let b = Server::start_replica(&on_host, lease, &flags);
    let cluster = Replicas::behind_haproxy(vec![c, a, b], lb_port);
    let pool = cluster.create_pool("p");
    let mut launchers = launchers(&pool, 2, "4");
    let mut runs: Vec<String> = (0..6)
        .map(|_| cluster.submit(&pool.name, &numbered(30, "0.1")))
        .collect();
    wait_for("runs to start", Duration::from_secs(30), || {
        runs.iter()
            .all(|id| cluster.run(id)["state"] != "READY")
            .then_some(())
    });

    netns.cut();
    // PostgreSQL notices the silent holder and lets go of its lock; A or B
    // takes the duties within one lease period.
    wait_for(
        "A or B to take the duties",
        Duration::from_secs(6 + 4),
        || {
            cluster.replicas[1..]
                .iter()
                .any(|r| r.proc.log().contains(duties))
                .then_some(())
        },
    );
    // Work goes on through the replicas left.
    runs.extend((0..4).map(|_| cluster.submit(&pool.name, &numbered(10, "0.1"))));
    let (first, rest) = runs.split_at(6);
    cluster.assert_all_finished_once(first, 30, Duration::from_secs(90));
    cluster.assert_all_finished_once(rest, 10, Duration::from_secs(90));

    // The new holder reaps: a worker that dies now has its run failed as lost.
    let doomed = cluster.submit(&pool.name, "sleep 60");
    wait_for("the long run to start", Duration::from_secs(30), || {
        (cluster.run(&doomed)["state"] != "READY").then_some(())
    });
    for launcher in &mut launchers {
        launcher.proc.signal(nix::sys::signal::Signal::SIGKILL);
    }
    let failed = wait_for(
        "the reaper to fail the run",
        Duration::from_secs(30),
        || {
            let run = cluster.run(&doomed);
            (run["state"] == "FAILED").then_some(run)
        },
    );
    assert!(
        failed["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("worker lost"),
        "{failed:#}"
    );
    netns.heal();
}

#[test]
#[ignore = "needs PostgreSQL (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
fn news_on_one_replica_wakes_waiters_on_another() {
    // No load balancer: the launcher polls B, the user talks to A.
    let Some((a, b, _database)) = two_replicas() else {
        return;
    };
    let pool = b.create_pool("p");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    // Let the launcher's poll settle into its long wait on B.
    std::thread::sleep(Duration::from_secs(2));
    let id = a.submit(&pool.name, &["sh", "-c", &numbered(20, "0.2")]);
    // A poll waits up to 25 s for news: far sooner means A's NOTIFY woke it.
    let started = std::time::Instant::now();
    wait_for(
        "B's poller to take the run",
        Duration::from_secs(10),
        || (a.run(&id)["state"] != "READY").then_some(()),
    );
    eprintln!("picked up across replicas in {:?}", started.elapsed());
    // Chunks stored through B wake a follower on A (its wait is 30 s).
    let follow = Command::new(gantry_bin())
        .args(["run", "logs", "-f", &id])
        .env("GANTRY_URL", &a.url)
        .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        follow.status.success(),
        "{}",
        String::from_utf8_lossy(&follow.stderr)
    );
    let log = String::from_utf8_lossy(&follow.stdout);
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=20).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "following on A ended {:?} after the submission: it was not woken by B's chunks",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs PostgreSQL (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
fn a_stop_drain_or_reset_through_one_replica_is_seen_by_another_at_once() {
    // B remembers the sessions it looked up, and that a worker has no stop
    // pending, for minutes (worker_cache.rs): a stop, a drain or a reset
    // made through A must reach it at once.
    let Some((a, b, _database)) = two_replicas() else {
        return;
    };
    let pool = b.create_pool("p");
    let session = register_raw(&b, &pool, "session-cache-nonce-0001");
    let call = |path: &str, body: Value| -> (u16, Value) {
        let response = b
            .http()
            .post(format!("{}/api/v1/worker/{path}", b.url))
            .bearer_auth(&session)
            .json(&body)
            .send()
            .unwrap();
        (response.status().as_u16(), response.json().unwrap())
    };
    let id = a.submit(&pool.name, &["sleep", "60"]);
    let (status, polled) = call(
        "poll",
        serde_json::json!({ "free_slots": 1, "wait_ms": 5000 }),
    );
    assert_eq!(status, 200, "{polled}");
    let lease = polled["leases"][0].clone();
    assert_eq!(lease["run_id"], id.as_str(), "{polled}");
    let held = serde_json::json!({ "runs": [{ "run_id": id, "lease_id": lease["lease_id"] }] });
    let heartbeat = || call("heartbeat", held.clone());
    for _ in 0..3 {
        let (status, body) = heartbeat();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["instructions"]["drain"], false, "{body}");
        assert_eq!(
            body["instructions"]["stop"],
            serde_json::json!([]),
            "{body}"
        );
    }

    let stopped = a.cli(&["run", "stop", &id]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let started = std::time::Instant::now();
    wait_for("B to pass the stop on", Duration::from_secs(5), || {
        (heartbeat().1["instructions"]["stop"] == serde_json::json!([id])).then_some(())
    });
    eprintln!("stop seen across replicas in {:?}", started.elapsed());
    let workers = a.cli_json(&["worker", "list", "--pool", "p"]);
    let worker = workers[0]["id"].as_str().unwrap().to_string();

    let drained = a.cli(&["worker", "drain", &worker]);
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let started = std::time::Instant::now();
    wait_for("B to see the drain", Duration::from_secs(5), || {
        (heartbeat().1["instructions"]["drain"] == true).then_some(())
    });
    eprintln!("drain seen across replicas in {:?}", started.elapsed());

    let generated = gantry_pki::generate(2048, "p").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csr = dir.path().join("p.csr");
    std::fs::write(&csr, &generated.csr_pem).unwrap();
    let reset = a.cli(&["pool", "reset", "p", "--csr", csr.to_str().unwrap()]);
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let started = std::time::Instant::now();
    let refused = wait_for(
        "B to refuse the old session",
        Duration::from_secs(5),
        || {
            let (status, body) = heartbeat();
            (status == 401).then_some(body)
        },
    );
    eprintln!("reset seen across replicas in {:?}", started.elapsed());
    assert_eq!(refused["error"]["code"], "unauthorized", "{refused}");
}

#[test]
fn a_replica_needs_a_shared_keyring_and_a_postgres_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(gantry_bin());
        command
            .arg("server")
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("GANTRY_SECRETS_KEY")
            .env_remove("GANTRY_DATABASE_URL");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    // No database is reached: the keyring is checked first.
    let out = server(
        &[
            "--database-url",
            "postgres://gantry:hunter2hunter2@127.0.0.1:1/gantry",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("GANTRY_SECRETS_KEY") && stderr.contains("--secrets-key-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    // Not a PostgreSQL URL: named, fixed, and the password masked.
    let out = server(
        &["--database-url", "mysql://gantry:hunter2hunter2@db/gantry"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--database-url") && stderr.contains("postgres://"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    // A database out of reach: named, without the password.
    let key = gantry_pki::at_rest::SecretsKeyring::generate_key();
    let out = server(
        &[
            "--database-url",
            "postgres://gantry:hunter2hunter2@127.0.0.1:1/gantry",
        ],
        &[("GANTRY_SECRETS_KEY", &key)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot open the database"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}
