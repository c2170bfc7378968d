//! Throwaway PostgreSQL for Gantry's tests.
//!
//! Nothing here assumes a PostgreSQL server is running. A test asks for
//! [`database_url`]: a fresh, empty database of its own. The cluster it lives
//! in is, in order:
//! - the one `GANTRY_TEST_POSTGRES_URL` names (an admin URL: `scripts/test-all.sh`
//!   starts one cluster for the whole run with `scripts/throwaway-postgres.sh`);
//! - else one this process starts on first use ([`Cluster::start`]) and
//!   that dies with it.
//!
//! Which engine the end-to-end suite runs on is `GANTRY_TEST_ENGINE`
//! (`sqlite`, the default, or `postgres`): see [`engine_is_postgres`].

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// True when the suite should run its control planes on PostgreSQL.
pub fn engine_is_postgres() -> bool {
    std::env::var("GANTRY_TEST_ENGINE").is_ok_and(|e| e == "postgres")
}

/// A new, empty database, as a URL for `gantry server --database-url`.
pub fn database_url() -> String {
    let admin = admin_url();
    let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    psql(admin, &format!("CREATE DATABASE {name}"));
    replace_database(admin, &name)
}

/// The admin URL of the cluster this process uses.
pub fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("GANTRY_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let cluster = Cluster::start().unwrap_or_else(|e| panic!("{e}"));
            let url = cluster.admin_url();
            // Lives as long as the process: its server has PDEATHSIG set.
            std::mem::forget(cluster);
            url
        }
    })
}

/// Runs one SQL statement with psql against `url`; panics with its output on failure.
pub fn psql(url: &str, sql: &str) -> String {
    let output = Command::new(bin("psql"))
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs (Debian: apt-get install postgresql)");
    assert!(
        output.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a postgres URL ends with /database");
    format!("{base}/{name}")
}

/// A PostgreSQL 15 cluster in a temporary directory, listening on
/// 127.0.0.1 at a free port, trusting local connections. Dropping it stops
/// the server and deletes the directory.
pub struct Cluster {
    server: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Result<Cluster, String> {
        Cluster::start_reachable_from(&[], &[])
    }

    /// A cluster also listening on `addresses` and trusting clients in
    /// `client_cidrs` (e.g. a network namespace's end of a veth pair).
    pub fn start_reachable_from(
        addresses: &[&str],
        client_cidrs: &[&str],
    ) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let data = dir.path().join("data");
        // PostgreSQL refuses to run as root; tests often do.
        let user = run_as();
        if let Some((uid, gid)) = user {
            nix::unistd::chown(dir.path(), Some(uid.into()), Some(gid.into()))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let mut initdb = Command::new(bin("initdb"));
        initdb
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data);
        let output = as_user(&mut initdb, user)
            .output()
            .map_err(|e| format!("initdb: {e} (Debian: apt-get install postgresql)"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let hba = data.join("pg_hba.conf");
        let mut rules =
            std::fs::read_to_string(&hba).map_err(|e| format!("{}: {e}", hba.display()))?;
        for cidr in client_cidrs {
            rules.push_str(&format!("host all all {cidr} trust\n"));
        }
        std::fs::write(&hba, rules).map_err(|e| format!("{}: {e}", hba.display()))?;
        let listen = std::iter::once("127.0.0.1")
            .chain(addresses.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        let port = free_port();
        let mut postgres = Command::new(bin("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c"])
            .arg(format!("listen_addresses={listen}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            // Throwaway: speed over durability.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
            // A replica cut off from the network is noticed in seconds, so
            // its advisory locks pass to another (see docs/scaling-out.md).
            .args([
                "-c",
                "tcp_keepalives_idle=1",
                "-c",
                "tcp_keepalives_interval=1",
            ])
            .args(["-c", "tcp_keepalives_count=2"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join("postgres.log"))
                    .map_err(|e| e.to_string())?,
            );
        as_user(&mut postgres, user);
        // Dies with the thread that started it: a thread that lives as long
        // as the process (see `spawn_for_process`).
        let server = spawn_for_process(postgres)?;
        let cluster = Cluster {
            server,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not start in 30 s: {}",
                    std::fs::read_to_string(cluster._dir.path().join("postgres.log"))
                        .unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database of this cluster, as a URL through `host`.
    pub fn database_url(&self, host: &str) -> String {
        let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
        psql(&self.admin_url(), &format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@{host}:{}/{name}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        let pid = nix::unistd::Pid::from_raw(self.server.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.server.wait();
    }
}

/// Spawns `command` from a thread that never ends, with PDEATHSIG: the
/// child is killed when this process exits, however it exits, and not
/// before (PDEATHSIG fires when the spawning *thread* ends).
fn spawn_for_process(mut command: Command) -> Result<Child, String> {
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(command.spawn().map_err(|e| format!("postgres: {e}")));
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())?
}

/// The `postgres` user's IDs when running as root.
fn run_as() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn as_user(command: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// A PostgreSQL program: Debian keeps the server's under a versioned directory.
pub fn bin(name: &str) -> PathBuf {
    for version in ["17", "16", "15"] {
        let path = Path::new("/usr/lib/postgresql")
            .join(version)
            .join("bin")
            .join(name);
        if path.exists() {
            return path;
        }
    }
    PathBuf::from(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
