//! One benchmark's world: a fresh temporary directory, a real `gantry
//! server` on 127.0.0.1, a pool, and real `gantry-launcher` processes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use gantry_pki::PoolPrivateKey;
use gantry_wire::token::PoolToken;

use crate::api::Api;
use crate::procs::{kill_many, Proc};
use crate::sim::PoolCredentials;

pub const ADMIN_TOKEN: &str = "gantry-bench-admin-token-0123456789";

/// Where a benchmark's control plane keeps its data.
#[derive(Clone, Debug)]
pub enum Engine {
    /// SQLite in the benchmark's temporary directory, one process.
    Sqlite,
    /// A fresh database on this PostgreSQL server (an admin URL), served by
    /// `replicas` processes: runs are submitted to the first, launchers and
    /// simulated workers talk to the last.
    Postgres { admin_url: String, replicas: usize },
}

/// What every benchmark shares: where the binaries are, and one pool key
/// (RSA key generation is slow; every fresh server gets a pool from it).
#[derive(Clone)]
pub struct Ctx {
    pub engine: Engine,
    pub bin_dir: PathBuf,
    pub private_key_pem: String,
    pub csr_pem: String,
    pub keep_temp: bool,
    pub server_log_level: String,
    pub tmp_root: Option<PathBuf>,
}

impl Ctx {
    pub fn new(
        bin_dir: PathBuf,
        keep_temp: bool,
        server_log_level: String,
        tmp_root: Option<PathBuf>,
    ) -> Result<Ctx> {
        for bin in ["gantry", "gantry-launcher"] {
            let path = bin_dir.join(bin);
            if !path.is_file() {
                bail!("{} not found; build it first (`cargo build --release`, or ./scripts/bench.sh), or pass --bin-dir", path.display());
            }
        }
        // 2048 bits: the minimum the server accepts; verification cost barely
        // depends on the size, signing (the launcher's side) does.
        let key = gantry_pki::generate(2048, "gantry-bench").context("generating the pool key")?;
        Ok(Ctx {
            engine: Engine::Sqlite,
            bin_dir,
            private_key_pem: key.private_key_pem,
            csr_pem: key.csr_pem,
            keep_temp,
            server_log_level,
            tmp_root,
        })
    }

    /// A fresh directory for one benchmark, removed afterwards unless --keep-temp.
    pub fn temp_dir(&self, name: &str) -> Result<TempDir> {
        let prefix = format!("gantry-bench-{name}-");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        let dir = match &self.tmp_root {
            Some(root) => builder.tempdir_in(root)?,
            None => builder.tempdir()?,
        };
        if !self.keep_temp {
            crate::procs::track_temp_dir(dir.path());
        }
        Ok(TempDir {
            dir: Some(dir),
            keep: self.keep_temp,
        })
    }
}

pub struct TempDir {
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl TempDir {
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives until drop")
            .path()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if self.keep {
                eprintln!("  (kept {})", dir.keep().display());
            } else {
                // Removed before it is untracked: an interrupt meanwhile removes it too.
                let _ = dir.close();
            }
            crate::procs::untrack_temp_dir(&path);
        }
    }
}

/// A new database on the PostgreSQL server at `admin_url`, as a URL.
async fn create_database(admin_url: &str) -> Result<String> {
    use sqlx::{Connection, Executor};
    let name = format!(
        "gantry_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("--database-url: cannot connect")?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .context("--database-url: cannot create a database")?;
    let (base, _) = admin_url
        .rsplit_once('/')
        .context("--database-url must end with /DATABASE")?;
    let (_, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    Ok(if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{}/{name}?{query}", base)
    })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// A running control plane, killed on drop: one process, or replicas.
pub struct Server {
    /// The first (or only) process: runs are submitted to it.
    pub proc: Proc,
    pub api: Api,
    /// The last replica: pools are made on it, so launchers talk to it.
    pub pool_api: Api,
    pub pool_proc_pid: u32,
    /// Every replica's base URL (one on SQLite).
    pub bases: Vec<String>,
    /// The PostgreSQL database, when on PostgreSQL.
    pub database_url: Option<String>,
    _replicas: Vec<Proc>,
}

impl Server {
    /// Every control-plane process (the replicas).
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.proc.pid())
            .chain(self._replicas.iter().map(Proc::pid))
            .collect()
    }

    /// Transactions committed so far in its PostgreSQL database.
    pub async fn database_commits(&self) -> Result<Option<i64>> {
        use sqlx::Connection;
        let Some(url) = &self.database_url else {
            return Ok(None);
        };
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let commits: i64 = sqlx::query_scalar(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(Some(commits))
    }
}

impl Server {
    /// Starts the control plane of `ctx.engine` in `dir` and waits until it answers.
    pub async fn start(ctx: &Ctx, dir: &Path, lease_timeout: &str) -> Result<Server> {
        match &ctx.engine {
            Engine::Sqlite => Server::start_one(ctx, dir, lease_timeout, None).await,
            Engine::Postgres {
                admin_url,
                replicas,
            } => {
                let url = create_database(admin_url).await?;
                // One keyring for the replicas of this database.
                let key = gantry_pki::at_rest::SecretsKeyring::generate_key();
                let shared = Some((url.as_str(), key.as_str()));
                let mut first =
                    Server::start_one(ctx, &dir.join("r0"), lease_timeout, shared).await?;
                for i in 1..(*replicas).max(1) {
                    let other =
                        Server::start_one(ctx, &dir.join(format!("r{i}")), lease_timeout, shared)
                            .await?;
                    first.pool_api = other.api.clone();
                    first.bases.push(other.api.base.clone());
                    first.pool_proc_pid = other.pool_proc_pid;
                    first._replicas.push(other.proc);
                }
                first.database_url = Some(url);
                Ok(first)
            }
        }
    }

    async fn start_one(
        ctx: &Ctx,
        dir: &Path,
        lease_timeout: &str,
        // The database URL and the keyring's key.
        postgres: Option<(&str, &str)>,
    ) -> Result<Server> {
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let mut command = Command::new(ctx.bin_dir.join("gantry"));
            command
                .arg("server")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--lease-timeout")
                .arg(lease_timeout)
                .arg("--log-level")
                .arg(&ctx.server_log_level)
                .arg("--log-format")
                .arg("json")
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", dir)
                .env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
            if let Some((url, key)) = postgres {
                command
                    .arg("--database-url")
                    .arg(url)
                    .env("GANTRY_SECRETS_KEY", key);
            }
            std::fs::create_dir_all(dir)?;
            let mut proc = Proc::spawn(command, "gantry server", &dir.join("server.log"))?;
            let url = format!("http://127.0.0.1:{port}");
            let api = Api::new(&url, ADMIN_TOKEN);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if api.health().await.is_ok() {
                    let pid = proc.pid();
                    return Ok(Server {
                        proc,
                        bases: vec![api.base.clone()],
                        database_url: None,
                        pool_api: api.clone(),
                        api,
                        pool_proc_pid: pid,
                        _replicas: Vec::new(),
                    });
                }
                if let Err(error) = proc.check_alive() {
                    last_error = Some(error);
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "gantry server did not answer within 15 s; its log ends:\n{}",
                        proc.log_tail(15)
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("gantry server did not start")))
    }

    /// Creates a pool from the bench key; returns its token and credentials.
    /// With replicas, on the last one: the token names it.
    pub async fn pool(&self, ctx: &Ctx, name: &str) -> Result<Pool> {
        let created = self.pool_api.create_pool(name, &ctx.csr_pem).await?;
        let token = PoolToken::decode(&created.token).context("the pool token")?;
        Ok(Pool {
            id: created.id,
            token: created.token,
            credentials: PoolCredentials {
                pool_id: token.pool_id,
                credential: token.credential,
                key: ctx.private_key_pem.parse::<PoolPrivateKey>()?,
            },
        })
    }
}

pub struct Pool {
    pub id: String,
    pub token: String,
    pub credentials: PoolCredentials,
}

/// Settings for real launchers.
#[derive(Clone, Copy)]
pub struct LauncherOpts {
    pub max_concurrent_runs: u32,
}

impl Default for LauncherOpts {
    fn default() -> Self {
        LauncherOpts {
            max_concurrent_runs: 1,
        }
    }
}

/// Starts `count` real launchers for `pool`, each with its own work dir.
/// Must be called from the main thread (see [`Proc::spawn`]).
pub fn spawn_launchers(
    ctx: &Ctx,
    dir: &Path,
    pool: &Pool,
    first: usize,
    count: usize,
    opts: LauncherOpts,
) -> Result<Vec<Proc>> {
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(&ctx.private_key_pem);
    let mut procs = Vec::with_capacity(count);
    for i in first..first + count {
        let work = dir.join(format!("launcher-{i}"));
        std::fs::create_dir_all(&work)?;
        let mut command = Command::new(ctx.bin_dir.join("gantry-launcher"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &work)
            .env("GANTRY_TOKEN", &pool.token)
            .env("GANTRY_POOL_PRIVATE_KEY", &key_b64)
            .env("GANTRY_WORK_DIR", &work)
            .env("GANTRY_EXECUTOR", "process")
            .env("GANTRY_LOG_FORMAT", "json")
            .env("GANTRY_LOG_LEVEL", "warn")
            .env(
                "GANTRY_MAX_CONCURRENT_RUNS",
                opts.max_concurrent_runs.to_string(),
            )
            .env("GANTRY_METADATA_bench_index", i.to_string());
        match Proc::spawn(
            command,
            format!("launcher {i}"),
            &dir.join(format!("launcher-{i}.log")),
        ) {
            Ok(proc) => procs.push(proc),
            Err(error) => {
                kill_many(procs);
                return Err(error);
            }
        }
    }
    Ok(procs)
}

/// A pool named `name` on `server`, and `count` real launchers of it,
/// registered and idle.
pub async fn idle_pool(
    ctx: &Ctx,
    dir: &Path,
    server: &Server,
    name: &str,
    count: usize,
) -> Result<(Pool, Vec<Proc>)> {
    let pool = server.pool(ctx, name).await?;
    let mut launchers = spawn_launchers(ctx, dir, &pool, 0, count, LauncherOpts::default())?;
    wait_idle(
        &server.api,
        &pool,
        &mut launchers,
        count,
        Duration::from_secs(60),
    )
    .await?;
    Ok((pool, launchers))
}

/// Waits until `count` workers of the pool are idle, failing early if a
/// launcher exits.
pub async fn wait_idle(
    api: &Api,
    pool: &Pool,
    launchers: &mut [Proc],
    count: usize,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let deadline = started + limit;
    loop {
        let idle = api.idle_workers(&pool.id).await?;
        if idle >= count {
            return Ok(started.elapsed());
        }
        for launcher in launchers.iter_mut() {
            launcher.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("only {idle} of {count} launchers registered within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
