//! Encryption at rest on a real SQLite file: nothing secret reaches the
//! file in clear, a missing key is named, rotation moves every value to the
//! new key, values from before encryption are encrypted at open, and a
//! ciphertext moved to another row does not decrypt.

use std::collections::BTreeMap;
use std::path::Path;

use gantry_pki::at_rest::SecretsKeyring;
use gantry_store::SqlStore;
use gantry_store::{
    NewPool, NewStateVersion, PoolKey, PoolStore, StackRecord, StackStore, StateStore, StoreError,
};

const SECRET: &str = "s3cr3t-variable-value";
const STATE: &str = r#"{"version":4,"outputs":{"password":{"value":"state-held-password"}}}"#;

fn keyring(keys: &[&str]) -> SecretsKeyring {
    SecretsKeyring::parse(&keys.join("\n")).unwrap()
}

fn id_of(key: &str) -> String {
    keyring(&[key]).current().to_string()
}

/// Everything on disk: the database and its write-ahead log.
fn disk_holds(dir: &Path, needle: &str) -> bool {
    ["gantry.db", "gantry.db-wal"].iter().any(|file| {
        std::fs::read(dir.join(file))
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

async fn seed(store: &SqlStore) -> String {
    let pool = store
        .create_pool(
            &NewPool {
                name: "p".into(),
                description: String::new(),
                key: PoolKey {
                    public_key_pem: "pem".into(),
                    key_fingerprint: "fp".into(),
                    credential_hash: "hash".into(),
                },
            },
            1,
        )
        .await
        .unwrap();
    let stack = store
        .create_stack(
            &StackRecord {
                name: "web".into(),
                pool_id: pool.id,
                tool: "terraform".into(),
                secret_env: BTreeMap::from([("TOKEN".into(), SECRET.into())]),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap();
    for serial in [1, 2] {
        store
            .put_state(&stack.id, None, &state(serial), 2)
            .await
            .unwrap();
    }
    stack.id
}

fn state(serial: i64) -> NewStateVersion {
    NewStateVersion {
        serial,
        lineage: "l".into(),
        resources: 0,
        sha256: "x".into(),
        data: STATE.as_bytes().to_vec(),
        run_id: None,
    }
}

async fn assert_readable(store: &SqlStore, stack_id: &str) {
    let stack = store.find_stack("web").await.unwrap().unwrap();
    assert_eq!(stack.secret_env["TOKEN"], SECRET);
    let (version, data) = store.current_state(stack_id).await.unwrap().unwrap();
    assert_eq!(version.version, 2);
    assert_eq!(data, STATE.as_bytes());
    let (_, first) = store.state_version(stack_id, 1).await.unwrap().unwrap();
    assert_eq!(first, STATE.as_bytes());
}

fn under(usage: &[gantry_store::sql::SecretsUsage], key: &str) -> u64 {
    usage
        .iter()
        .filter(|u| u.key_id.as_deref() == Some(key))
        .map(|u| u.values)
        .sum()
}

#[tokio::test]
async fn secrets_are_encrypted_on_disk_and_rotate_to_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let old = SecretsKeyring::generate_key();
    let new = SecretsKeyring::generate_key();

    let store = SqlStore::open_sqlite(dir.path(), keyring(&[&old]))
        .await
        .unwrap();
    let stack_id = seed(&store).await;
    assert_readable(&store, &stack_id).await;
    // Stack secret map (1) and two state versions.
    assert_eq!(
        under(&store.secrets_usage().await.unwrap(), &id_of(&old)),
        3
    );
    drop(store);
    assert!(!disk_holds(dir.path(), SECRET));
    assert!(!disk_holds(dir.path(), "state-held-password"));

    // Without the old key the store refuses to start, naming the key.
    let Err(err) = SqlStore::open_sqlite(dir.path(), keyring(&[&new])).await else {
        panic!("opened without the key its values are under");
    };
    assert!(matches!(err, StoreError::SecretsKey(_)), "{err}");
    assert!(err.to_string().contains(&id_of(&old)), "{err}");
    assert!(!err.to_string().contains(&old), "the key leaked: {err}");

    // New key first, old key second: everything reads; rotation moves it all.
    let store = SqlStore::open_sqlite(dir.path(), keyring(&[&new, &old]))
        .await
        .unwrap();
    assert_readable(&store, &stack_id).await;
    assert_eq!(store.reencrypt_secrets(false).await.unwrap(), 3);
    assert_eq!(
        store.reencrypt_secrets(false).await.unwrap(),
        0,
        "rotation is idempotent"
    );
    let usage = store.secrets_usage().await.unwrap();
    assert_eq!(under(&usage, &id_of(&new)), 3);
    assert_eq!(under(&usage, &id_of(&old)), 0);
    drop(store);

    // The old key can go.
    let store = SqlStore::open_sqlite(dir.path(), keyring(&[&new]))
        .await
        .unwrap();
    assert_readable(&store, &stack_id).await;
}

/// A seeded database, closed: (its directory, its key, the stack's ID).
async fn seeded() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretsKeyring::generate_key();
    let store = SqlStore::open_sqlite(dir.path(), keyring(&[&key]))
        .await
        .unwrap();
    let stack_id = seed(&store).await;
    (dir, key, stack_id)
}

/// A plain connection to the file, bypassing the store: what an earlier
/// version, or an attacker with the file, can write.
async fn raw_connection(dir: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", dir.join("gantry.db").display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

#[tokio::test]
async fn values_stored_in_clear_are_encrypted_at_open() {
    let (dir, key, stack_id) = seeded().await;

    // What an earlier version wrote: the columns in clear.
    let raw = raw_connection(dir.path()).await;
    sqlx::query("UPDATE state_versions SET data = ?")
        .bind(STATE.as_bytes())
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("UPDATE stacks SET secret_env = ?")
        .bind(format!(r#"{{"TOKEN":"{SECRET}"}}"#))
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;

    let store = SqlStore::open_sqlite(dir.path(), keyring(&[&key]))
        .await
        .unwrap();
    let usage = store.secrets_usage().await.unwrap();
    assert!(usage.iter().all(|u| u.key_id.is_some()), "{usage:?}");
    assert_readable(&store, &stack_id).await;
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
    let (dir, key, stack_id) = seeded().await;

    let raw = raw_connection(dir.path()).await;
    sqlx::query(
        "UPDATE state_versions SET data = (SELECT data FROM state_versions WHERE version = 1) WHERE version = 2",
    )
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;

    let store = SqlStore::open_sqlite(dir.path(), keyring(&[&key]))
        .await
        .unwrap();
    let err = store.current_state(&stack_id).await.unwrap_err();
    assert!(matches!(err, StoreError::SecretsKey(_)), "{err}");
    assert!(err.to_string().contains("moved from another row"), "{err}");
    // The untouched version still reads.
    assert!(store.state_version(&stack_id, 1).await.is_ok());
}
