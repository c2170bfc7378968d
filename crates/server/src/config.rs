use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a control plane runs. Built by `gantry server` from its flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// SQLite's database, the default keyring and the development TLS CA.
    pub data_dir: PathBuf,
    /// A PostgreSQL database shared by every replica, instead of SQLite.
    pub database_url: Option<String>,
    /// The URL launchers and the CLI reach this server at; written into pool
    /// tokens. When unset, the URL a request came in on is used.
    pub public_url: Option<String>,
    /// A worker silent for this long loses its runs ("worker lost").
    pub lease_timeout: Duration,
    /// The longest a poll is held open when there is nothing to say.
    pub max_poll_wait: Duration,
    /// How long a worker session lives without renewal.
    pub session_ttl: Duration,
    /// `GANTRY_ADMIN_TOKEN`: becomes the admin token at first start.
    pub admin_token: Option<String>,
    /// The launcher binary served at `/api/v1/launcher/download`.
    pub launcher_binary: Option<PathBuf>,
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<crate::tls::TlsSource>,
    /// The keyring that encrypts secrets at rest.
    pub secrets_key: crate::secrets_key::SecretsKeySource,
    /// Reverse proxies and load balancers whose `X-Forwarded-For` names the
    /// client (for the failed-authentication limit); empty trusts none.
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// `--metrics-listen`: also serve `/metrics` here, without authentication.
    pub metrics_listen: Option<SocketAddr>,
    /// `--autoscale POOL=ASG`: Auto Scaling groups this server scales.
    pub autoscale: Vec<AutoscaleTarget>,
    /// `--autoscale-interval`: time between the in-server autoscalers' ticks.
    pub autoscale_interval: Duration,
}

/// One `--autoscale POOL=ASG`: the pool whose demand sizes the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscaleTarget {
    pub pool: String,
    pub asg_name: String,
}

impl std::str::FromStr for AutoscaleTarget {
    type Err = String;

    fn from_str(value: &str) -> Result<AutoscaleTarget, String> {
        match value.split_once('=') {
            Some((pool, asg)) if !pool.trim().is_empty() && !asg.trim().is_empty() => {
                Ok(AutoscaleTarget {
                    pool: pool.trim().to_string(),
                    asg_name: asg.trim().to_string(),
                })
            }
            _ => Err(format!(
                "{value:?} is not POOL=ASG: give the worker pool's name and the Auto Scaling group's name, e.g. --autoscale linux=gantry-linux-workers"
            )),
        }
    }
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            database_url: None,
            public_url: None,
            lease_timeout: Duration::from_secs(30),
            max_poll_wait: Duration::from_secs(25),
            session_ttl: Duration::from_secs(15 * 60),
            admin_token: None,
            launcher_binary: None,
            tls: None,
            secrets_key: Default::default(),
            trusted_proxies: Default::default(),
            metrics_listen: None,
            autoscale: Vec::new(),
            autoscale_interval: Duration::from_secs(30),
        }
    }

    /// Heartbeats come three times per lease timeout, so one lost heartbeat
    /// never costs a run.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease_timeout / 3
    }
}

#[cfg(test)]
mod tests {
    use super::AutoscaleTarget;

    #[test]
    fn autoscale_targets_are_pool_equals_group() {
        let target: AutoscaleTarget = " linux = gantry-linux ".parse().unwrap();
        assert_eq!(
            target,
            AutoscaleTarget {
                pool: "linux".into(),
                asg_name: "gantry-linux".into()
            }
        );
        for bad in ["linux", "=asg", "linux=", ""] {
            let error = bad.parse::<AutoscaleTarget>().unwrap_err();
            assert!(error.contains("POOL=ASG"), "{error}");
        }
    }
}
