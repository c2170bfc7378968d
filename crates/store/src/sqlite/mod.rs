//! The SQLite store: the default, one control plane process on one file.
//!
//! SQLite allows one writer at a time. Rather than let connections fight for
//! the lock (and fail with SQLITE_BUSY when a read transaction upgrades), all
//! writes go through a pool of exactly one connection; reads use their own
//! pool and, thanks to WAL, never wait for the writer. Claiming a run is then
//! atomic by construction.

mod at_rest;
mod browse;
mod logs;
mod pools;
mod runs;
mod stacks;
mod state;
mod tokens;
mod workers;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use gantry_pki::at_rest::SecretsKeyring;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use at_rest::SecretsUsage;

use crate::Result;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Encrypts the columns that hold secrets (see `at_rest`).
    keyring: Arc<SecretsKeyring>,
}

impl SqliteStore {
    /// Opens (creating if needed) `gantry.db` in `data_dir` and migrates it.
    /// Fails when the database holds values encrypted under a key that
    /// `keyring` lacks; values still in clear are encrypted.
    pub async fn open(data_dir: &Path, keyring: SecretsKeyring) -> Result<SqliteStore> {
        let path = data_dir.join("gantry.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let store = SqliteStore {
            writer,
            reader,
            keyring: Arc::new(keyring),
        };
        store.prepare_secrets().await?;
        Ok(store)
    }
}

pub(crate) fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("store values always serialise")
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}
