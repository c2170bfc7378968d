//! Test harness: real `gantry` and `gantry-launcher` processes on loopback.
//!
//! Every process is killed when its handle drops, so a failing test leaves
//! nothing running.
//!
//! The engine switch: with `GANTRY_TEST_ENGINE=postgres`, every [`Server`]
//! keeps its data in a fresh database of a throwaway PostgreSQL cluster
//! (`--database-url`, keyring in `GANTRY_SECRETS_KEY`) instead of SQLite in
//! its data directory. The same tests then hold for both engines.

#![allow(dead_code)]

pub mod netns;
pub mod pki;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub fn gantry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gantry")
}

pub fn launcher_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gantry-launcher")
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose stderr is collected, killed on drop.
pub struct Proc {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn_command(command: Command) -> Proc {
        Proc::spawn(command)
    }

    fn spawn(mut command: Command) -> Proc {
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = command.spawn().expect("spawn");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc { child, stderr }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
    }

    /// Waits for exit; returns the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let child = &mut self.child;
        let status = wait_for("process exit", timeout, || child.try_wait().unwrap());
        status.code().unwrap_or(-1)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub lease_timeout: String,
    /// The address it listens on (127.0.0.1 unless started with `start_on`).
    host: String,
    /// Flags given at start, given again on restart.
    extra: Vec<String>,
    /// Its PostgreSQL database and keyring, under the engine switch.
    pub postgres: Option<PostgresDatabase>,
    /// The network namespace it runs in, if not this host's.
    netns: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// A server's database on the throwaway PostgreSQL cluster.
#[derive(Clone)]
pub struct PostgresDatabase {
    pub url: String,
    pub secrets_key: String,
}

impl PostgresDatabase {
    /// Under `GANTRY_TEST_ENGINE=postgres`: a new, empty database.
    pub fn for_engine() -> Option<PostgresDatabase> {
        gantry_test_postgres::engine_is_postgres().then(PostgresDatabase::new)
    }

    pub fn new() -> PostgresDatabase {
        PostgresDatabase {
            url: gantry_test_postgres::database_url(),
            secrets_key: gantry_pki::at_rest::SecretsKeyring::generate_key(),
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with("3s")
    }

    pub fn start_with(lease_timeout: &str) -> Server {
        Server::start_with_args(lease_timeout, &[])
    }

    /// A server listening on `host` (e.g. the host end of a [`netns::Netns`]
    /// pair, which both the test and a launcher in the namespace reach).
    pub fn start_on(host: &str, lease_timeout: &str) -> Server {
        let postgres = PostgresDatabase::for_engine();
        Server::spawn_in_temp_dir(host, lease_timeout, &[], postgres.as_ref(), None)
    }

    /// A server with extra flags (e.g. `--tls-cert`).
    pub fn start_args(args: &[&str]) -> Server {
        Server::start_with_args("3s", args)
    }

    /// A server with this lease timeout and extra flags.
    pub fn start_with_args(lease_timeout: &str, args: &[&str]) -> Server {
        let postgres = PostgresDatabase::for_engine();
        Server::spawn_in_temp_dir("127.0.0.1", lease_timeout, args, postgres.as_ref(), None)
    }

    /// A server on SQLite whatever the engine switch says: for what only
    /// SQLite has (the data directory's generated keyring, the file itself).
    pub fn start_sqlite_args(args: &[&str]) -> Server {
        Server::spawn_in_temp_dir("127.0.0.1", "3s", args, None, None)
    }

    /// A replica on `postgres`'s database running inside `netns`, listening
    /// on the namespace's address.
    pub fn start_replica_in(
        netns: &netns::Netns,
        postgres: &PostgresDatabase,
        lease_timeout: &str,
        args: &[&str],
    ) -> Server {
        Server::spawn_in_temp_dir(
            &netns.ns_ip,
            lease_timeout,
            args,
            Some(postgres),
            Some(&netns.name),
        )
    }

    /// A replica on `postgres`'s database (several may share one).
    pub fn start_replica(
        postgres: &PostgresDatabase,
        lease_timeout: &str,
        args: &[&str],
    ) -> Server {
        Server::spawn_in_temp_dir("127.0.0.1", lease_timeout, args, Some(postgres), None)
    }

    /// A server on a free port with its data directory in a new temporary
    /// directory, removed with the server.
    fn spawn_in_temp_dir(
        host: &str,
        lease_timeout: &str,
        args: &[&str],
        postgres: Option<&PostgresDatabase>,
        netns: Option<&str>,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut server = Server::spawn(
            host,
            &data_dir,
            free_port(),
            lease_timeout,
            args,
            postgres,
            netns,
        );
        server._dir = Some(dir);
        server
    }

    fn spawn(
        host: &str,
        data_dir: &Path,
        port: u16,
        lease_timeout: &str,
        extra: &[&str],
        postgres: Option<&PostgresDatabase>,
        netns: Option<&str>,
    ) -> Server {
        let tls = extra.iter().any(|a| a.starts_with("--tls"));
        let mut command = match netns {
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name, gantry_bin()]);
                command
            }
            None => Command::new(gantry_bin()),
        };
        command
            .args(["server", "--listen", &format!("{host}:{port}")])
            .args(["--lease-timeout", lease_timeout])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            .env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("GANTRY_LOG_FORMAT", "json");
        if let Some(postgres) = postgres {
            command.arg("--database-url").arg(&postgres.url);
            if !extra.contains(&"--secrets-key-file") {
                command.env("GANTRY_SECRETS_KEY", &postgres.secrets_key);
            }
        }
        let proc = Proc::spawn(command);
        let url = format!("{}://{host}:{port}", if tls { "https" } else { "http" });
        let server = Server {
            proc,
            url,
            port,
            data_dir: data_dir.to_path_buf(),
            lease_timeout: lease_timeout.into(),
            host: host.into(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            postgres: postgres.cloned(),
            netns: netns.map(str::to_string),
            _dir: None,
        };
        // Certificates are checked by the tests themselves; here we only wait.
        let probe = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        wait_for("the server to answer", Duration::from_secs(20), || {
            probe
                .get(format!("{}/api/v1/health", server.url))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        server
    }

    /// Kills the server (SIGKILL) and starts it again on the same data and port.
    pub fn restart(&mut self) {
        self.restart_after(Duration::ZERO);
    }

    /// Kills the server (SIGKILL), leaves it down for `down`, then starts it
    /// again on the same data and port: an outage.
    pub fn restart_after(&mut self, down: Duration) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        std::thread::sleep(down);
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let fresh = Server::spawn(
            &self.host,
            &self.data_dir,
            self.port,
            &self.lease_timeout,
            &extra,
            self.postgres.as_ref(),
            self.netns.as_deref(),
        );
        let Server { proc, .. } = fresh;
        self.proc = proc;
    }

    /// `host:port` it listens on.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Whether the database holds `needle` in clear: SQLite's file and WAL,
    /// or a dump of the PostgreSQL database (where byte columns show as hex).
    pub fn database_holds(&self, needle: &str) -> bool {
        let contains =
            |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        match &self.postgres {
            None => ["gantry.db", "gantry.db-wal"].iter().any(|file| {
                let bytes = std::fs::read(self.data_dir.join(file)).unwrap_or_default();
                contains(&bytes, needle.as_bytes())
            }),
            Some(postgres) => {
                let dump = Command::new(gantry_test_postgres::bin("pg_dump"))
                    .args(["--data-only", "-d", &postgres.url])
                    .output()
                    .expect("pg_dump runs");
                assert!(
                    dump.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&dump.stderr)
                );
                contains(&dump.stdout, needle.as_bytes())
                    || contains(&dump.stdout, hex::encode(needle).as_bytes())
            }
        }
    }

    /// The bundle trusting a `--tls-dev` server's CA, if it has one.
    pub fn dev_ca_bundle(&self) -> Option<String> {
        let pem = std::fs::read_to_string(self.data_dir.join("tls/ca.pem")).ok()?;
        Some(gantry_pki::ca_bundle::encode(&[pem]).unwrap())
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(gantry_bin());
        if let Some(bundle) = self.dev_ca_bundle() {
            command.env("GANTRY_ADDITIONAL_ROOT_CAS", bundle);
        }
        command
            .args(args)
            .env("GANTRY_URL", &self.url)
            .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
            .env("NO_COLOR", "1")
            .output()
            .expect("run gantry")
    }

    /// Runs a CLI command with `--output json`, asserting success.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let output = self.cli(&all);
        assert!(
            output.status.success(),
            "gantry {args:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("json output")
    }

    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
    }

    pub fn api_get(&self, path: &str) -> Value {
        let response = self
            .http()
            .get(format!("{}/api/v1{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().unwrap()
    }

    pub fn run(&self, id: &str) -> Value {
        self.api_get(&format!("/runs/{id}"))
    }

    pub fn submit(&self, pool: &str, command: &[&str]) -> String {
        let mut args = vec!["run", "submit", "--pool", pool, "--output", "json", "--"];
        args.extend(command);
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let run: Value = serde_json::from_slice(&output.stdout).unwrap();
        run["id"].as_str().unwrap().to_string()
    }

    /// Waits until the run is in a terminal state; returns it.
    pub fn wait_run_end(&self, id: &str, timeout: Duration) -> Value {
        wait_for(&format!("run {id} to end"), timeout, || {
            let run = self.run(id);
            let state = run["state"].as_str().unwrap().to_string();
            ["FINISHED", "FAILED", "STOPPED", "CANCELED", "DISCARDED"]
                .contains(&state.as_str())
                .then_some(run)
        })
    }

    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        wait_for(&format!("run {id} to be {state}"), timeout, || {
            let run = self.run(id);
            (run["state"] == state).then_some(run)
        })
    }

    /// The whole log of a run, read the way `gantry run logs` does.
    pub fn logs(&self, id: &str) -> Vec<u8> {
        let output = self.cli(&["run", "logs", id]);
        assert!(
            output.status.success(),
            "logs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    pub fn create_pool(&self, name: &str) -> Pool {
        let dir = tempfile::tempdir().unwrap();
        let generated = gantry_pki::generate(2048, name).unwrap();
        let csr = dir.path().join("pool.csr");
        std::fs::write(&csr, &generated.csr_pem).unwrap();
        let created = self.cli_json(&["pool", "create", name, "--csr", csr.to_str().unwrap()]);
        Pool {
            name: name.to_string(),
            id: created["id"].as_str().unwrap().to_string(),
            token: created["token"].as_str().unwrap().to_string(),
            private_key_pem: generated.private_key_pem,
        }
    }
}

#[derive(Clone)]
pub struct Pool {
    pub name: String,
    pub id: String,
    pub token: String,
    pub private_key_pem: String,
}

impl Pool {
    pub fn private_key_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.private_key_pem)
    }
}

pub struct Launcher {
    pub proc: Proc,
    pub work_dir: PathBuf,
    pub _dir: Option<tempfile::TempDir>,
}

impl Launcher {
    pub fn command(pool: &Pool, work_dir: &Path) -> Command {
        Launcher::configure(Command::new(launcher_bin()), pool, work_dir)
    }

    /// The launcher's environment on `command` (the launcher, or a wrapper
    /// that execs it).
    fn configure(mut command: Command, pool: &Pool, work_dir: &Path) -> Command {
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GANTRY_TOKEN", &pool.token)
            .env("GANTRY_POOL_PRIVATE_KEY", pool.private_key_b64())
            .env("GANTRY_WORK_DIR", work_dir)
            .env("GANTRY_EXECUTOR", "process")
            .env("GANTRY_LOG_FORMAT", "json")
            .env("GANTRY_STOP_GRACE", "2s")
            .env("GANTRY_REGISTER_TIMEOUT", "5s");
        command
    }

    pub fn start(pool: &Pool, env: &[(&str, &str)]) -> Launcher {
        let dir = tempfile::tempdir().unwrap();
        let mut launcher = Launcher::start_in(pool, &dir.path().join("work"), env);
        launcher._dir = Some(dir);
        launcher
    }

    /// Starts a launcher on a given work directory (to restart "the same" launcher).
    pub fn start_in(pool: &Pool, work_dir: &Path, env: &[(&str, &str)]) -> Launcher {
        let mut command = Launcher::command(pool, work_dir);
        for (k, v) in env {
            command.env(k, v);
        }
        Launcher {
            proc: Proc::spawn(command),
            work_dir: work_dir.to_path_buf(),
            _dir: None,
        }
    }

    /// Starts a launcher inside a network namespace (`ip netns exec`, which
    /// execs it: the process is the launcher itself).
    pub fn start_netns(pool: &Pool, netns: &netns::Netns, env: &[(&str, &str)]) -> Launcher {
        let dir = tempfile::tempdir().unwrap();
        let work_dir = dir.path().join("work");
        let mut command = Launcher::configure(netns.command(launcher_bin()), pool, &work_dir);
        for (k, v) in env {
            command.env(k, v);
        }
        Launcher {
            proc: Proc::spawn(command),
            work_dir,
            _dir: Some(dir),
        }
    }

    pub fn wait_registered(&self) {
        wait_for("the launcher to register", Duration::from_secs(20), || {
            self.proc
                .log()
                .contains("registered; waiting for runs")
                .then_some(())
        });
    }
}

/// Runs the launcher to its exit with extra environment; returns (code, stderr).
pub fn launcher_exit(pool: Option<&Pool>, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = match pool {
        Some(pool) => Launcher::command(pool, &dir.path().join("work")),
        None => {
            let mut c = Command::new(launcher_bin());
            c.env_clear()
                .env("GANTRY_WORK_DIR", dir.path().join("work"));
            c
        }
    };
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// CI must not skip: a missing tool is a failure there.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} is required under CI=true; run scripts/install-test-deps.sh");
        }
        eprintln!("skipping: {tool} not installed (run scripts/install-test-deps.sh)");
    }
    found
}

/// Registers a worker of `pool` by hand (proof of key possession, as the
/// launcher does); returns its session token.
pub fn register_raw(server: &Server, pool: &Pool, nonce: &str) -> String {
    let key: gantry_pki::PoolPrivateKey = pool.private_key_pem.parse().unwrap();
    let token = gantry_wire::token::PoolToken::decode(&pool.token).unwrap();
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let request = gantry_wire::worker::RegisterRequest {
        pool_id: token.pool_id.clone(),
        credential: token.credential,
        version: gantry_wire::VERSION.into(),
        hostname: "intruder".into(),
        tags: Default::default(),
        max_concurrent_runs: 1,
        timestamp_ms,
        nonce: nonce.into(),
        signature: base64::engine::general_purpose::STANDARD.encode(key.sign(
            &gantry_wire::worker::registration_message(&token.pool_id, timestamp_ms, nonce),
        )),
        orphaned_runs: vec![],
        resume_worker_id: None,
    };
    let body: Value = server
        .http()
        .post(format!("{}/api/v1/worker/register", server.url))
        .json(&request)
        .send()
        .unwrap()
        .json()
        .unwrap();
    body["session_token"]
        .as_str()
        .unwrap_or_else(|| panic!("registration refused: {body}"))
        .to_string()
}
