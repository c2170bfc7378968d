use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use gantry_server::client_addr::TrustedProxies;
use gantry_server::tls::TlsSource;
use gantry_server::{AutoscaleTarget, ServerConfig};

use crate::{exit, Failure};

/// `gantry server --help`: on the command's variant, whose doc comment
/// would otherwise hide it.
pub const LONG_ABOUT: &str = "Run the control plane: the API, dispatch, leases, logs.\n\n\
At first start it creates its SQLite database in --data-dir and an admin API token: the value of\n\
GANTRY_ADMIN_TOKEN if set, else a generated one printed once. Only its hash is stored.\n\n\
With --database-url postgres://..., several replicas behind a load balancer share one\n\
PostgreSQL database instead: give each the same GANTRY_SECRETS_KEY (or --secrets-key-file), the\n\
same GANTRY_ADMIN_TOKEN, and --public-url naming the load balancer. Any replica serves any\n\
request; one at a time does the singleton duties (the lease reaper). See docs/scaling-out.md.\n\n\
Terraform state and secret variables are encrypted at rest under the secrets keyring: the keys\n\
in GANTRY_SECRETS_KEY (comma-separated base64), else --secrets-key-file, else\n\
<data-dir>/secrets.key (generated at first start; back it up apart from the database).\n\
The first key encrypts, the others only decrypt: see `gantry secrets-key rotate --help`.\n\n\
Stops gracefully on SIGTERM or Ctrl-C.";

/// Run the control plane: the API, dispatch, leases, logs, on SQLite or PostgreSQL.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "GANTRY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Where the SQLite database, the default secrets key and the development
    /// TLS files live. Not needed with --database-url (unless --tls-dev).
    #[arg(long, env = "GANTRY_DATA_DIR", default_value = "./gantry-data")]
    data_dir: PathBuf,

    /// Keep everything in this PostgreSQL database instead of SQLite, e.g.
    /// postgres://gantry:PASSWORD@db.internal:5432/gantry?sslmode=require.
    /// Every replica behind the load balancer gets the same URL.
    // Checked in `run`, not by clap, whose errors would echo the password.
    #[arg(long, env = "GANTRY_DATABASE_URL")]
    database_url: Option<String>,

    /// The URL launchers reach this server at, written into pool tokens.
    /// Default: the URL each request came in on.
    #[arg(long, env = "GANTRY_PUBLIC_URL")]
    public_url: Option<String>,

    /// A worker silent this long is lost and its runs fail.
    #[arg(long, env = "GANTRY_LEASE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    lease_timeout: Duration,

    /// How long a worker's session lives without a heartbeat to renew it.
    /// A launcher whose session ran out (a long outage) registers again as
    /// the same worker and keeps its runs. At least --lease-timeout.
    #[arg(long, env = "GANTRY_SESSION_TTL", default_value = "15m", value_parser = parse_duration)]
    session_ttl: Duration,

    /// The launcher binary to serve at /api/v1/launcher/download.
    /// Default: gantry-launcher beside this executable.
    #[arg(long, env = "GANTRY_LAUNCHER_BINARY")]
    launcher_binary: Option<PathBuf>,

    /// Serve HTTPS with this PEM certificate (chain).
    #[arg(
        long,
        env = "GANTRY_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_dev"
    )]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "GANTRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Serve HTTPS with a development CA and certificate generated in <data-dir>/tls
    /// (printed: how to make launchers and the CLI trust it).
    #[arg(long, env = "GANTRY_TLS_DEV")]
    tls_dev: bool,

    /// Extra DNS names or IPs for the development certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,

    /// The secrets keyring file (one base64 key per line, the current key
    /// first). Default: GANTRY_SECRETS_KEY, else <data-dir>/secrets.key.
    #[arg(long, env = "GANTRY_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,

    /// Reverse proxies or load balancers in front of the server, as IPs or
    /// CIDRs separated by commas (e.g. 10.0.0.0/8,192.0.2.7). From these
    /// peers only, X-Forwarded-For names the client whose failed
    /// authentications are counted; default: trust none.
    #[arg(long, env = "GANTRY_TRUSTED_PROXIES", value_name = "CIDRS",
        value_parser = parse_trusted_proxies, default_value = "")]
    trusted_proxies: TrustedProxies,

    /// Also serve GET /metrics (Prometheus) on this address WITHOUT
    /// authentication, e.g. 10.0.1.5:9100 on an internal network. GET
    /// /metrics on --listen always needs an API token.
    #[arg(long, env = "GANTRY_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Scale an EC2 Auto Scaling group to a pool's demand, from inside the
    /// server: POOL=ASG (repeatable), with the defaults of `gantry
    /// autoscaler`. AWS credentials and AWS_REGION come from the
    /// environment. See docs/autoscaling.md.
    #[arg(long, value_name = "POOL=ASG", value_parser = parse_autoscale)]
    autoscale: Vec<AutoscaleTarget>,

    /// Time between the --autoscale autoscalers' ticks.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    autoscale_interval: Duration,

    /// Log filter, e.g. info or gantry_server=debug.
    #[arg(long, env = "GANTRY_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Log format; default json (structured), text when stderr is a terminal.
    #[arg(long, env = "GANTRY_LOG_FORMAT", value_parser = ["json", "text"])]
    log_format: Option<String>,
}

fn check_database_url(text: &str) -> Result<(), Failure> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(());
    }
    Err(Failure::new(
        exit::USAGE,
        format!(
            "--database-url {:?} is not a PostgreSQL URL; write postgres://USER:PASSWORD@HOST:5432/DATABASE \
             (SQLite needs no URL: it is the default, in --data-dir)",
            gantry_server::secrets_key::redact_url(text)
        ),
    ))
}

fn parse_autoscale(text: &str) -> Result<AutoscaleTarget, String> {
    text.parse()
}

fn parse_trusted_proxies(text: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(text)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 30s or 2m"))?;
    if duration < Duration::from_millis(300) {
        return Err("use at least 300ms".into());
    }
    Ok(duration)
}

pub async fn run(args: ServerArgs) -> Result<u8, Failure> {
    init_logging(&args.log_level, args.log_format.as_deref());
    if let Some(url) = &args.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::new(
                exit::USAGE,
                format!("--public-url {url:?} is not an http(s) URL"),
            ));
        }
    }
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsSource::Files { cert, key }),
        _ if args.tls_dev => {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                args.listen.ip().to_string(),
            ];
            if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
                names.push(host.trim().to_string());
            }
            names.extend(args.tls_sans);
            names.retain(|n| !n.is_empty() && n != "0.0.0.0" && n != "::");
            names.dedup();
            Some(TlsSource::Development {
                dir: args.data_dir.join("tls"),
                names,
            })
        }
        _ => None,
    };
    let mut config = ServerConfig::new(args.listen, args.data_dir);
    if let Some(url) = &args.database_url {
        check_database_url(url)?;
    }
    config.database_url = args.database_url;
    config.tls = tls;
    config.public_url = args.public_url;
    config.lease_timeout = args.lease_timeout;
    if args.session_ttl < args.lease_timeout {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "--session-ttl ({}) is shorter than --lease-timeout ({}): a session must outlive a lease; raise it",
                humantime::format_duration(args.session_ttl),
                humantime::format_duration(args.lease_timeout)
            ),
        ));
    }
    config.session_ttl = args.session_ttl;
    config.launcher_binary = args.launcher_binary;
    config.trusted_proxies = args.trusted_proxies;
    config.metrics_listen = args.metrics_listen;
    config.autoscale = args.autoscale;
    config.autoscale_interval = args.autoscale_interval;
    config.admin_token = std::env::var("GANTRY_ADMIN_TOKEN").ok();
    config.secrets_key =
        gantry_server::secrets_key::SecretsKeySource::from_env(args.secrets_key_file)
            .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    gantry_server::serve(config)
        .await
        .map_err(|e| Failure::new(exit::ERROR, format!("{e:#}")))?;
    Ok(exit::OK)
}

pub(crate) fn init_logging(level: &str, format: Option<&str>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match format {
        Some(f) => f == "json",
        None => !std::io::stderr().is_terminal(),
    };
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder
            .with_ansi(std::env::var_os("NO_COLOR").is_none())
            .init();
    }
}
