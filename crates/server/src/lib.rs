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
pub mod client_addr;
mod config;
mod convert;
mod error;
mod extract;
mod limiter;
pub mod openapi;
pub mod protocol;
mod reaper;
pub mod secrets_key;
mod signals;
mod state;
pub mod tls;
mod ui;

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context;
use gantry_store::Store;

pub use config::ServerConfig;
pub use state::AppState;

/// Opens the store, makes sure an admin token exists, and serves until
/// SIGINT or SIGTERM.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
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
    raise_open_file_limit();
    let store: Arc<dyn Store> =
        Arc::new(secrets_key::open_store(&config.data_dir, &config.secrets_key, true).await?);
    auth::ensure_admin_token(store.as_ref(), config.admin_token.as_deref()).await?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", config.listen))?;
    let ui_keys = ui::SessionKeys::from_keyring(&config.secrets_key.load(&config.data_dir, false)?);
    let state = AppState::new(store, config).with_ui_keys(ui_keys);
    tokio::spawn(reaper::run(state.clone()));
    let app = api::router(state.clone());
    tracing::info!(
        listen = %listener.local_addr()?,
        version = gantry_wire::VERSION,
        tls = state.config.tls.is_some(),
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
