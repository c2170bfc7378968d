//! The Gantry control plane (`gantry server`).
//!
//! It serves two audiences over one HTTP API under `/api/v1`:
//! - users and scripts ([`api`]): pools, runs, logs, workers; bearer API tokens;
//! - launchers ([`protocol`]): register, poll, heartbeat, report, log, finish;
//!   bearer worker-session tokens, and a lease ID on every call about a run.
//!
//! All state lives in the [`Store`](gantry_store::Store); the only in-memory
//! state is [`signals::Signals`], which wakes long-polls early and is never
//! the source of truth.

pub mod api;
mod auth;
#[cfg(feature = "autoscaler")]
mod autoscale;
pub mod client_addr;
mod config;
mod convert;
mod duties;
mod error;
mod extract;
mod limiter;
mod liveness;
pub mod metrics;
pub mod openapi;
pub mod protocol;
mod reaper;
pub mod secrets_key;
mod signals;
mod state;
pub mod tls;
mod ui;
mod worker_cache;

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context;
use gantry_store::Store;

pub use config::{AutoscaleTarget, ServerConfig};
pub use state::AppState;

/// Opens the store, makes sure an admin token exists, and serves until
/// SIGINT or SIGTERM.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let dev_tls = matches!(config.tls, Some(tls::TlsSource::Development { .. }));
    if config.database_url.is_none() || dev_tls {
        // Owner-only: the database and the default secrets keyring live here.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .with_context(|| {
                format!(
                    "--data-dir {}: cannot create the directory",
                    config.data_dir.display()
                )
            })?;
    }
    raise_open_file_limit();
    let store: Arc<dyn Store> = Arc::new(
        secrets_key::open_store(
            &config.data_dir,
            config.database_url.as_deref(),
            &config.secrets_key,
            true,
        )
        .await?,
    );
    auth::ensure_admin_token(store.as_ref(), config.admin_token.as_deref()).await?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}: cannot bind"))?,
        ),
        None => None,
    };
    let ui_keys = ui::SessionKeys::from_keyring(&config.secrets_key.load(&config.data_dir, false)?);
    let state = AppState::new(store, config).with_ui_keys(ui_keys);
    if let Some(url) = state.config.database_url.clone() {
        signals::relay_between_replicas(&state.signals, &url).await?;
    }
    tokio::spawn(duties::run(state.clone()));
    tokio::spawn(liveness::run(state.clone()));
    spawn_autoscalers(&state).await?;
    if let Some(listener) = metrics_listener {
        tracing::info!(listen = %listener.local_addr()?, "serving /metrics without authentication");
        tokio::spawn(metrics::serve_unauthenticated(listener, state.clone()));
    }
    let app = api::router(state.clone());
    tracing::info!(
        listen = %listener.local_addr()?,
        version = gantry_wire::VERSION,
        tls = state.config.tls.is_some(),
        database = if state.config.database_url.is_some() { "postgres" } else { "sqlite" },
        lease_timeout = %humantime::format_duration(state.config.lease_timeout),
        "gantry server ready"
    );
    // Long-polls hold connections for up to the poll wait; graceful shutdown
    // would wait for all of them, so cap it.
    let shutdown = shutdown_signal();
    match tls {
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls)?;
            let app = app.into_make_service_with_connect_info::<tls::PeerAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        None => {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    Ok(())
}

/// The `--autoscale POOL=ASG` autoscalers. Like the reaper, a duty one
/// control plane does for all: with replicas, move this call under the
/// singleton-duty holder.
async fn spawn_autoscalers(state: &AppState) -> anyhow::Result<()> {
    #[cfg(feature = "autoscaler")]
    return autoscale::spawn(state).await;
    #[cfg(not(feature = "autoscaler"))]
    match state.config.autoscale.first() {
        Some(target) => anyhow::bail!(
            "--autoscale {}={}: this gantry was built without the autoscaler; use a release build, or build with `cargo build --features autoscaler`",
            target.pool,
            target.asg_name
        ),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        std::process::exit(0);
    });
}

/// Every idle launcher holds one connection; the soft limit (often 1024)
/// would cap a control plane far below what it can hold.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
