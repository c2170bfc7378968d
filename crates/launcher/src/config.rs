//! The launcher's configuration: every setting is an environment variable
//! (how the CloudFormation template, the Helm chart and systemd set it) and
//! a flag. Everything is checked here, at start: a bad value stops the
//! launcher with a message that names the variable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::{Parser, ValueEnum};
use gantry_pki::PoolPrivateKey;
use gantry_wire::token::PoolToken;
use values::{parse_cpus, parse_duration, parse_memory};

mod values;

const ABOUT: &str =
    "The Gantry launcher: joins a worker pool, takes runs, executes them, streams their logs.";

const LONG_ABOUT: &str = "\
The Gantry launcher: joins a worker pool, takes runs, executes them, streams their logs.

It connects out only (HTTPS long-poll to the control plane named in the token), through
HTTPS_PROXY/HTTP_PROXY/NO_PROXY when set. Give it the pool token and the pool's private key:

    export GANTRY_TOKEN=$(cat pool.token)
    export GANTRY_POOL_PRIVATE_KEY=$(base64 -w0 < pool.key)
    gantry-launcher

Every flag below can also be set with the environment variable shown beside it.
Tags: each GANTRY_METADATA_<key>=<value> variable becomes the worker tag <key>=<value>.

Tool versions: a stack may pin its tool's version (gantry stack create --tool-version 1.0.3).
The launcher then runs GANTRY_TOOLS_DIR/<tool>/<version>/<program> when that file exists
(e.g. $GANTRY_TOOLS_DIR/terraform/1.0.3/terraform, $GANTRY_TOOLS_DIR/opentofu/1.6.2/tofu),
else the tool on PATH (or the runner image's), and checks `<program> version -json`: a run
whose tool reports another version fails in PREPARING, naming both versions.

Signals: the first SIGTERM (or Ctrl-C) drains: no new runs, the runs in flight finish, then the
launcher exits 0. A second signal stops the runs in flight (TERM, then KILL).

Exit codes: 0 drained and exited; 1 runtime failure (e.g. control plane unreachable);
2 invalid configuration; 3 credentials refused (wrong key, or the pool was reset or deleted);
4 launcher version refused (the message says which version to use and where to get it).";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// Each run in a container from its runner image.
    Docker,
    /// Each run as a child process in a fresh workspace directory.
    Process,
}

/// When the Docker executor pulls a run's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not on the worker.
    IfNotPresent,
    /// Pull before every run (a private registry's latest tag).
    Always,
    /// Never pull: only images already on the worker (air-gapped hosts).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Parser)]
#[command(name = "gantry-launcher", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Args {
    /// The pool token printed by `gantry pool create` (base64).
    #[arg(
        long,
        env = "GANTRY_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,

    /// Read the pool token from this file instead.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// The pool's private key: base64 of the whole PEM file (`base64 -w0 < pool.key`).
    #[arg(
        long,
        env = "GANTRY_POOL_PRIVATE_KEY",
        hide_env_values = true,
        conflicts_with = "private_key_file"
    )]
    private_key: Option<String>,

    /// Read the private key from this file (PEM, or base64 of the PEM).
    #[arg(long, value_name = "FILE")]
    private_key_file: Option<PathBuf>,

    /// Extra CAs to trust: base64 of {"caCertificates": ["<base64 PEM>", …]}. Runs trust
    /// them too: SSL_CERT_FILE, GIT_SSL_CAINFO and the like point at
    /// <work dir>/ca-certificates.pem, the system roots plus these.
    #[arg(long, env = "GANTRY_ADDITIONAL_ROOT_CAS", hide_env_values = true)]
    additional_root_cas: Option<String>,

    /// Runs executed at once.
    #[arg(long, env = "GANTRY_MAX_CONCURRENT_RUNS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    max_concurrent_runs: u32,

    /// How runs execute. Default: docker when a Docker engine is reachable, else process.
    #[arg(long, env = "GANTRY_EXECUTOR", value_enum)]
    executor: Option<ExecutorKind>,

    /// A run is killed when it runs longer than this.
    #[arg(long, env = "GANTRY_RUN_TIMEOUT", default_value = "70m", value_parser = parse_duration)]
    run_timeout: Duration,

    /// A run is killed when it prints nothing for this long.
    #[arg(long, env = "GANTRY_LOGS_TIMEOUT", default_value = "7m", value_parser = parse_duration)]
    logs_timeout: Duration,

    /// Between TERM and KILL when a run is stopped.
    #[arg(long, env = "GANTRY_STOP_GRACE", default_value = "10s", value_parser = parse_duration)]
    stop_grace: Duration,

    /// Launcher variables passed into runs (comma-separated names).
    #[arg(long, env = "GANTRY_PASSTHROUGH_ENVS", value_delimiter = ',')]
    passthrough_envs: Vec<String>,

    /// Launcher variables whose values are masked in run logs (comma-separated names).
    #[arg(long, env = "GANTRY_MASK_ENVS", value_delimiter = ',')]
    mask_envs: Vec<String>,

    /// Runner image for runs that name none (docker executor).
    #[arg(long, env = "GANTRY_DEFAULT_RUNNER_IMAGE")]
    default_runner_image: Option<String>,

    /// Extra mounts for run containers: host:container[:ro], comma-separated.
    #[arg(long, env = "GANTRY_WORKER_EXTRA_MOUNTS", value_delimiter = ',')]
    worker_extra_mounts: Vec<String>,

    /// Docker network for run containers.
    #[arg(long, env = "GANTRY_WORKER_NETWORK")]
    worker_network: Option<String>,

    /// OCI runtime for run containers (e.g. runsc).
    #[arg(long, env = "GANTRY_WORKER_RUNTIME")]
    worker_runtime: Option<String>,

    /// Directory with a Docker config.json (registry credentials).
    #[arg(long, env = "GANTRY_DOCKER_CONFIG_DIR")]
    docker_config_dir: Option<PathBuf>,

    /// CPUs for each run container, e.g. 1.5 (default: no limit).
    #[arg(long, env = "GANTRY_WORKER_CPUS", value_parser = parse_cpus)]
    worker_cpus: Option<f64>,

    /// Memory for each run container, e.g. 512m or 4g (default: no limit).
    #[arg(long, env = "GANTRY_WORKER_MEMORY", value_parser = parse_memory)]
    worker_memory: Option<u64>,

    /// User that runs execute as in their container: uid[:gid] or a name the
    /// image knows. Default: 1000:1000 when the launcher is root, else the
    /// launcher's own uid:gid.
    #[arg(long, env = "GANTRY_WORKER_USER")]
    worker_user: Option<String>,

    /// When to pull runner images: if-not-present, always or never.
    #[arg(
        long,
        env = "GANTRY_PULL_POLICY",
        value_enum,
        default_value = "if-not-present"
    )]
    pull_policy: PullPolicy,

    /// Tool binaries by version, for stacks that pin one:
    /// <DIR>/<tool>/<version>/<program>, e.g. <DIR>/terraform/1.0.3/terraform. With the
    /// docker executor, mount it into run containers at the same path
    /// (GANTRY_WORKER_EXTRA_MOUNTS=<DIR>:<DIR>:ro).
    #[arg(long, env = "GANTRY_TOOLS_DIR", value_name = "DIR")]
    tools_dir: Option<PathBuf>,

    /// Let stacks clone git sources from this worker's own disk (`file://`
    /// URLs and paths). Off by default: a stack's URL would read any
    /// repository the launcher's user can.
    #[arg(long, env = "GANTRY_ALLOW_LOCAL_GIT_SOURCES")]
    allow_local_git_sources: bool,

    /// Where workspaces, log spools and the list of runs in flight live. Two
    /// launchers on one host need two directories.
    #[arg(long, env = "GANTRY_WORK_DIR")]
    work_dir: Option<PathBuf>,

    /// Give up registering when the control plane stays unreachable this long.
    #[arg(long, env = "GANTRY_REGISTER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    register_timeout: Duration,

    /// Log format; default json (structured), text when stderr is a terminal.
    #[arg(long, env = "GANTRY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,

    /// Log filter, e.g. `info` or `gantry_launcher=debug`.
    #[arg(long, env = "GANTRY_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub token: PoolToken,
    pub private_key: PoolPrivateKey,
    /// PEM certificates to trust besides the system roots.
    pub extra_roots: Vec<String>,
    pub max_concurrent_runs: u32,
    pub executor: ExecutorKind,
    pub run_timeout: Duration,
    pub logs_timeout: Duration,
    pub stop_grace: Duration,
    pub passthrough_envs: Vec<String>,
    pub mask_envs: Vec<String>,
    pub default_runner_image: Option<String>,
    pub worker_extra_mounts: Vec<String>,
    pub worker_network: Option<String>,
    pub worker_runtime: Option<String>,
    pub docker_config_dir: Option<PathBuf>,
    pub worker_cpus: Option<f64>,
    /// Bytes.
    pub worker_memory: Option<u64>,
    pub worker_user: Option<String>,
    pub pull_policy: PullPolicy,
    /// Clone `file://` and path git sources (GANTRY_ALLOW_LOCAL_GIT_SOURCES).
    pub allow_local_git_sources: bool,
    /// Tool binaries by version (GANTRY_TOOLS_DIR), absolute.
    pub tools_dir: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub register_timeout: Duration,
    pub tags: BTreeMap<String, String>,
    pub log_format: LogFormat,
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

fn error(variable: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_string(),
        message: message.into(),
    }
}

/// clap names the flag; operators set the variable. Name both.
fn from_clap(error: clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue};
    use clap::CommandFactory;
    let rendered = error.to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => {
            return ConfigError {
                variable: "arguments".into(),
                message,
            }
        }
    };
    let long = flag.trim_start_matches("--");
    let variable = Args::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| format!("{} ({flag})", env.to_string_lossy()))
        .unwrap_or(flag);
    ConfigError { variable, message }
}

/// Parses flags and environment. `--help` and `--version` exit here.
pub fn load() -> Result<Config, ConfigError> {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => return Err(from_clap(e)),
    };
    let token_text = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            error(
                "--token-file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?,
        (None, None) => {
            return Err(error(
                "GANTRY_TOKEN",
                "not set; give the pool token from `gantry pool create` (or --token-file)",
            ))
        }
    };
    let variable = if args.token.is_some() {
        "GANTRY_TOKEN"
    } else {
        "--token-file"
    };
    let token = PoolToken::decode(&token_text).map_err(|e| error(variable, e.to_string()))?;
    if !(token.url.starts_with("http://") || token.url.starts_with("https://")) {
        return Err(error(
            variable,
            format!(
                "the token's control plane URL {:?} is not an http(s) URL",
                token.url
            ),
        ));
    }

    let private_key = load_private_key(&args)?;
    let fingerprint = private_key.public_key().fingerprint();
    if fingerprint != token.key_fingerprint {
        return Err(error(
            "GANTRY_POOL_PRIVATE_KEY",
            format!(
                "this key does not match the pool: the token was issued for the key with fingerprint {}…, this key's is {}…; \
                 use the private key whose CSR created the pool (or the token from the pool's latest reset)",
                &token.key_fingerprint[..16.min(token.key_fingerprint.len())],
                &fingerprint[..16]
            ),
        ));
    }

    let extra_roots = match &args.additional_root_cas {
        Some(text) if !text.trim().is_empty() => gantry_pki::ca_bundle::decode(text)
            .map_err(|e| error("GANTRY_ADDITIONAL_ROOT_CAS", e.to_string()))?,
        _ => Vec::new(),
    };

    for name in args.passthrough_envs.iter().chain(&args.mask_envs) {
        if name.trim().is_empty() || name.contains('=') {
            return Err(error(
                "GANTRY_PASSTHROUGH_ENVS",
                format!("{name:?} is not a variable name; list names, comma-separated"),
            ));
        }
    }
    for mount in &args.worker_extra_mounts {
        let parts: Vec<&str> = mount.split(':').collect();
        let valid = matches!(parts.len(), 2 | 3)
            && parts[0].starts_with('/')
            && parts[1].starts_with('/')
            && (parts.len() == 2 || matches!(parts[2], "ro" | "rw"));
        if !valid {
            return Err(error(
                "GANTRY_WORKER_EXTRA_MOUNTS",
                format!("{mount:?} is not host:container[:ro|rw] with absolute paths, e.g. /etc/ssl/certs:/etc/ssl/certs:ro"),
            ));
        }
    }

    let tools_dir = match args.tools_dir.as_ref().filter(|d| !d.as_os_str().is_empty()) {
        None => None,
        Some(dir) => Some(std::fs::canonicalize(dir).ok().filter(|d| d.is_dir()).ok_or_else(|| {
            error(
                "GANTRY_TOOLS_DIR",
                format!(
                    "{} is not a directory; give the directory holding <tool>/<version>/<program>, e.g. terraform/1.0.3/terraform",
                    dir.display()
                ),
            )
        })?),
    };

    let executor = match args.executor {
        Some(kind) => kind,
        None if docker_reachable() => ExecutorKind::Docker,
        None => ExecutorKind::Process,
    };
    let work_dir = args.work_dir.clone().unwrap_or_else(default_work_dir);
    let log_format = args.log_format.unwrap_or_else(|| {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    });

    Ok(Config {
        token,
        private_key,
        extra_roots,
        max_concurrent_runs: args.max_concurrent_runs,
        executor,
        run_timeout: args.run_timeout,
        logs_timeout: args.logs_timeout,
        stop_grace: args.stop_grace,
        passthrough_envs: trimmed(args.passthrough_envs),
        mask_envs: trimmed(args.mask_envs),
        default_runner_image: args.default_runner_image,
        worker_extra_mounts: args.worker_extra_mounts,
        worker_network: args.worker_network,
        worker_runtime: args.worker_runtime,
        docker_config_dir: args.docker_config_dir,
        worker_cpus: args.worker_cpus,
        worker_memory: args.worker_memory,
        worker_user: args.worker_user.filter(|u| !u.trim().is_empty()),
        pull_policy: args.pull_policy,
        allow_local_git_sources: args.allow_local_git_sources,
        tools_dir,
        work_dir,
        register_timeout: args.register_timeout,
        tags: metadata_tags(std::env::vars()),
        log_format,
        log_level: args.log_level,
    })
}

/// Whether a Docker engine answers on `DOCKER_HOST` or the local socket.
fn docker_reachable() -> bool {
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) => match host.strip_prefix("unix://") {
            Some(path) => PathBuf::from(path),
            // A TCP engine: assume reachable; the executor reports otherwise.
            None => return !host.is_empty(),
        },
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    };
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

fn trimmed(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

fn load_private_key(args: &Args) -> Result<PoolPrivateKey, ConfigError> {
    let (variable, text) = match (&args.private_key, &args.private_key_file) {
        (Some(text), _) => ("GANTRY_POOL_PRIVATE_KEY", text.clone()),
        (None, Some(path)) => (
            "--private-key-file",
            std::fs::read_to_string(path).map_err(|e| error("--private-key-file", format!("cannot read {}: {e}", path.display())))?,
        ),
        (None, None) => {
            return Err(error(
                "GANTRY_POOL_PRIVATE_KEY",
                "not set; give base64 of the pool's private key: `base64 -w0 < pool.key` (or --private-key-file)",
            ))
        }
    };
    let pem = if text.contains("-----BEGIN") {
        text
    } else {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| {
                error(
                    variable,
                    format!(
                        "not valid base64 ({e}); set it to the output of `base64 -w0 < pool.key`"
                    ),
                )
            })?;
        String::from_utf8(bytes)
            .map_err(|_| error(variable, "the base64 does not decode to a PEM text file"))?
    };
    pem.parse::<PoolPrivateKey>()
        .map_err(|e| error(variable, e.to_string()))
}

fn default_work_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/gantry-launcher")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".local/state/gantry-launcher")
    } else {
        std::env::temp_dir().join("gantry-launcher")
    }
}

/// `GANTRY_METADATA_<key>=<value>` → tag `<key>=<value>`.
pub fn metadata_tags(vars: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.filter_map(|(name, value)| {
        let key = name.strip_prefix("GANTRY_METADATA_")?;
        (!key.is_empty()).then(|| (key.to_string(), value))
    })
    .collect()
}

pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_variables_become_tags() {
        let vars = [
            (
                "GANTRY_METADATA_instance_id".to_string(),
                "i-123".to_string(),
            ),
            ("GANTRY_METADATA_".to_string(), "ignored".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let tags = metadata_tags(vars.into_iter());
        assert_eq!(tags.len(), 1);
        assert_eq!(tags["instance_id"], "i-123");
    }
}
