//! SQLite: the default engine, one control plane process on one file.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::FutureExt;
use gantry_pki::at_rest::SecretsKeyring;
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Executor;

use super::{install_drivers, Engine, SqlStore};
use crate::Result;

/// Set on every connection: the `Any` driver takes only a URL, which cannot
/// carry these.
const PRAGMAS: &str =
    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL;";

impl SqlStore {
    /// Opens (creating if needed) `gantry.db` in `data_dir` and migrates it.
    /// Fails when the database holds values encrypted under a key that
    /// `keyring` lacks; values still in clear are encrypted.
    pub async fn open_sqlite(data_dir: &Path, keyring: SecretsKeyring) -> Result<SqlStore> {
        install_drivers();
        let url = sqlite_url(data_dir);
        // Create and migrate with the native driver, which also switches the
        // file to WAL (a setting the file keeps).
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let native = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&native).await?;
        native.close().await;

        let writer = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .after_connect(|conn, _| async move { conn.execute(PRAGMAS).await.map(drop) }.boxed())
            .connect(&format!("{url}?mode=rw"))
            .await?;
        let reader = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| async move { conn.execute(PRAGMAS).await.map(drop) }.boxed())
            .connect(&format!("{url}?mode=ro"))
            .await?;
        SqlStore::ready(writer, reader, Engine::Sqlite, keyring).await
    }
}

/// The database file of a data directory, as a URL.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("gantry.db").display())
}
