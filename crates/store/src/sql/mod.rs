//! The store's one implementation, in SQL, on two engines.
//!
//! Every query is written once, in the SQL both engines speak (numbered
//! `$1` parameters, `ON CONFLICT`, `RETURNING`), and runs through sqlx's
//! `Any` driver. The engines differ in how they keep concurrent writers
//! apart, and that is all that differs:
//!
//! - **SQLite** ([`sqlite`]) allows one writer at a time. Rather than let
//!   connections fight for the lock (and fail with SQLITE_BUSY when a read
//!   transaction upgrades), all writes go through a pool of exactly one
//!   connection; reads use their own pool and, thanks to WAL, never wait for
//!   the writer. Every write transaction is then atomic by construction.
//! - **PostgreSQL** ([`postgres`]) lets replicas write at once. A write
//!   transaction first locks the rows its decision rests on ([`lock`]); a
//!   claim takes READY rows with `FOR UPDATE SKIP LOCKED`, so claimers never
//!   wait on each other and never take the same run.

mod at_rest;
mod browse;
pub mod copy;
mod demand;
mod lock;
mod logs;
mod pools;
pub mod postgres;
pub mod replicas;
mod runs;
pub mod sqlite;
mod stacks;
mod state;
mod tokens;
mod workers;

use std::sync::Arc;

use gantry_pki::at_rest::SecretsKeyring;
use sqlx::AnyPool;

pub use at_rest::SecretsUsage;

use crate::Result;

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

pub struct SqlStore {
    /// SQLite: one connection. PostgreSQL: the same pool as `reader`.
    writer: AnyPool,
    reader: AnyPool,
    engine: Engine,
    /// Encrypts the columns that hold secrets (see `at_rest`).
    keyring: Arc<SecretsKeyring>,
}

impl SqlStore {
    /// Checks the keyring against what the database holds, and encrypts
    /// values still in clear (from before encryption at rest).
    async fn ready(
        writer: AnyPool,
        reader: AnyPool,
        engine: Engine,
        keyring: SecretsKeyring,
    ) -> Result<SqlStore> {
        let store = SqlStore {
            writer,
            reader,
            engine,
            keyring: Arc::new(keyring),
        };
        store.prepare_secrets().await?;
        Ok(store)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }
}

/// Registers sqlx's `Any` drivers once per process.
fn install_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
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
