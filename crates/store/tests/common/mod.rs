//! What the store tests share: a fresh store, and a pool.
//!
//! The store is on a new SQLite file, or with `GANTRY_TEST_ENGINE=postgres`
//! on a new database of a throwaway PostgreSQL cluster: the same tests hold
//! for both engines.

#![allow(dead_code)]

use gantry_pki::at_rest::SecretsKeyring;
use gantry_store::SqlStore;
use gantry_store::{NewPool, PoolKey, PoolRecord, PoolStore};

/// A store in a new temporary directory (or database), under a new key;
/// keep the directory as long as the store.
pub async fn store() -> (tempfile::TempDir, SqlStore) {
    if gantry_test_postgres::engine_is_postgres() {
        let dir = tempfile::tempdir().unwrap();
        return (dir, postgres_store().await);
    }
    let dir = tempfile::tempdir().unwrap();
    let keyring = SecretsKeyring::parse(&SecretsKeyring::generate_key()).unwrap();
    let store = SqlStore::open_sqlite(dir.path(), keyring).await.unwrap();
    (dir, store)
}

/// A store on a new database of the throwaway PostgreSQL cluster.
pub async fn postgres_store() -> SqlStore {
    let url = tokio::task::spawn_blocking(gantry_test_postgres::database_url)
        .await
        .unwrap();
    let keyring = SecretsKeyring::parse(&SecretsKeyring::generate_key()).unwrap();
    SqlStore::open_postgres(&url, keyring).await.unwrap()
}

/// A pool key whose every part is made from `fingerprint`.
pub fn key(fingerprint: &str) -> PoolKey {
    PoolKey {
        public_key_pem: format!("pem-{fingerprint}"),
        key_fingerprint: fingerprint.into(),
        credential_hash: format!("hash-{fingerprint}"),
    }
}

/// A pool named `name` under `key`.
pub async fn pool(store: &SqlStore, name: &str, key: PoolKey) -> PoolRecord {
    store
        .create_pool(
            &NewPool {
                name: name.into(),
                description: String::new(),
                key,
            },
            1,
        )
        .await
        .unwrap()
}
