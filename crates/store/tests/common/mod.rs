//! What the store tests share: a store on a fresh SQLite file, and a pool.

#![allow(dead_code)]

use gantry_pki::at_rest::SecretsKeyring;
use gantry_store::SqlStore;
use gantry_store::{NewPool, PoolKey, PoolRecord, PoolStore};

/// A store in a new temporary directory, under a new key; keep the
/// directory as long as the store.
pub async fn store() -> (tempfile::TempDir, SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let keyring = SecretsKeyring::parse(&SecretsKeyring::generate_key()).unwrap();
    let store = SqlStore::open_sqlite(dir.path(), keyring).await.unwrap();
    (dir, store)
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
