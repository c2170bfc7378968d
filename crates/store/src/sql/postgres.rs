//! PostgreSQL: several control-plane replicas on one database.

use std::time::Duration;

use gantry_pki::at_rest::SecretsKeyring;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgPoolOptions;

use super::{install_drivers, Engine, SqlStore};
use crate::Result;

impl SqlStore {
    /// Connects to `url` (`postgres://…`) and migrates the database. Replicas
    /// starting together do not race: sqlx holds an advisory lock while it
    /// migrates, and a migration already applied is skipped.
    pub async fn open_postgres(url: &str, keyring: SecretsKeyring) -> Result<SqlStore> {
        install_drivers();
        let native = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&native).await?;
        native.close().await;

        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        SqlStore::ready(pool.clone(), pool, Engine::Postgres, keyring).await
    }
}
