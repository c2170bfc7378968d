use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use gantry_store::Store;

use crate::signals::Signals;
use crate::ServerConfig;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ServerConfig>,
    pub signals: Arc<Signals>,
    pub limiter: Arc<crate::limiter::FailedAuthLimiter>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether this process does the singleton duties now (see `duties`).
    pub holds_duties: Arc<std::sync::atomic::AtomicBool>,
    /// Workers heard from since `last_seen` was last written (`liveness`).
    pub liveness: Arc<crate::liveness::WorkerLiveness>,
    /// The web UI's session cookie keys (from the secrets keyring in `serve`).
    pub ui_keys: Arc<crate::ui::SessionKeys>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> AppState {
        AppState {
            store,
            config: Arc::new(config),
            signals: Arc::new(Signals::default()),
            limiter: Arc::default(),
            metrics: Arc::default(),
            holds_duties: Arc::default(),
            liveness: Arc::default(),
            ui_keys: Arc::new(crate::ui::SessionKeys::random()),
        }
    }

    /// Web UI sessions keyed by the secrets keyring: every replica that
    /// shares it accepts the same cookies.
    pub fn with_ui_keys(mut self, keys: crate::ui::SessionKeys) -> AppState {
        self.ui_keys = Arc::new(keys);
        self
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
