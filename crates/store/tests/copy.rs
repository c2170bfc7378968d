//! `gantry db copy` at the store level: a SQLite store holding every kind of
//! row moves into PostgreSQL unchanged, verified per table; the PostgreSQL
//! store then reads it all with the same keyring (secrets decrypted) and
//! goes on where SQLite stopped. A second copy into the now non-empty
//! database is refused and changes nothing; a source in use is refused; a
//! copy that fails half-way leaves no row behind.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use gantry_pki::at_rest::SecretsKeyring;
use gantry_store::sql::copy::{copy_sqlite_to_postgres, CopyError, CopyEvent, TABLES};
use gantry_store::{
    LogStore, NewRun, NewSession, NewStateVersion, NewWorker, PlanReport, PoolStore, RunEnd,
    RunFilter, RunStore, SqlStore, StackRecord, StackStore, StateStore, TokenStore, WorkerStore,
};
use gantry_wire::run::{RunState, RunType};
use sqlx::Connection;

const SECRET: &str = "sealed-secret-value";
const STATE: &[u8] = br#"{"version":4,"outputs":{"password":{"value":"in-state"}}}"#;
const WORKSPACE: &[u8] = b"sealed workspace \x00\xff bytes";
const ARCHIVE: &[u8] = b"\x1f\x8b not really a tarball";

fn keyring(key: &str) -> SecretsKeyring {
    SecretsKeyring::parse(key).unwrap()
}

async fn database_url() -> String {
    tokio::task::spawn_blocking(gantry_test_postgres::database_url)
        .await
        .unwrap()
}

/// What a seeded store holds, to find it again.
struct Seeded {
    stack_id: String,
    task_run: String,
    parked_run: String,
    session: String,
}

/// Every kind of row, through the Store API.
async fn seed(store: &SqlStore) -> Seeded {
    store
        .insert_api_token("admin", "hash-admin", 1)
        .await
        .unwrap();
    let old = store.insert_api_token("old", "hash-old", 2).await.unwrap();
    store.revoke_api_token(&old.id, 3).await.unwrap();

    let pool = common::pool(store, "pool-a", common::key("fp-a")).await;
    assert!(store.use_nonce("nonce-1", 1_000_000).await.unwrap());
    let worker = store
        .register_worker(
            &NewWorker {
                pool_id: pool.id.clone(),
                pool_generation: pool.generation,
                version: "1.2.3".into(),
                hostname: "host-ü".into(),
                tags: BTreeMap::from([("zone".into(), "b".into())]),
                max_concurrent_runs: 3,
            },
            &NewSession {
                worker_id: String::new(),
                token_hash: "session-hash".into(),
                expires_at: i64::MAX,
            },
            5,
        )
        .await
        .unwrap();

    // Task runs: one finished with logs (text and binary), one still queued.
    let task = store
        .insert_run(
            &NewRun {
                pool_id: pool.id.clone(),
                run_type: RunType::Task,
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: BTreeMap::from([("A".into(), "1".into())]),
                image: Some("alpine:3".into()),
            },
            10,
        )
        .await
        .unwrap();
    let claimed = store
        .claim_runs(&pool.id, &worker.id, 1, 1_000, 11)
        .await
        .unwrap();
    let lease = claimed[0].lease_id.clone().unwrap();
    store
        .report_state(&task.id, &lease, RunState::Applying, 12)
        .await
        .unwrap();
    store
        .put_log_chunk(&task.id, &lease, 0, b"hello\n")
        .await
        .unwrap();
    store
        .put_log_chunk(&task.id, &lease, 1, &[0, 159, 146, 150, 255])
        .await
        .unwrap();
    store
        .finish_run(
            &task.id,
            &lease,
            &RunEnd {
                state: RunState::Failed,
                exit_code: Some(3),
                reason: Some("exit 3".into()),
            },
            13,
        )
        .await
        .unwrap();

    // A stack with secret variables and an archive; a tracked run parked
    // UNCONFIRMED with its stored workspace and a state credential.
    let stack = store
        .create_stack(
            &StackRecord {
                name: "web".into(),
                pool_id: pool.id.clone(),
                tool: "terraform".into(),
                tool_version: Some("1.0.3".into()),
                labels: vec!["prod".into()],
                env: BTreeMap::from([("TF_VAR_x".into(), "y".into())]),
                secret_env: BTreeMap::from([("TOKEN".into(), SECRET.into())]),
                hooks: BTreeMap::from([("before_plan".into(), vec!["true".into()])]),
                ..Default::default()
            },
            Some(ARCHIVE),
            20,
        )
        .await
        .unwrap();
    for serial in [1, 2] {
        store
            .put_state(&stack.id, None, &state(serial), 21)
            .await
            .unwrap();
    }
    let tracked = store
        .insert_stack_run(&stack, RunType::Tracked, &["plan".into()], 22)
        .await
        .unwrap();
    let claimed = store
        .claim_runs(&pool.id, &worker.id, 1, 1_000, 23)
        .await
        .unwrap();
    assert_eq!(claimed[0].id, tracked.id);
    let lease = claimed[0].lease_id.clone().unwrap();
    store
        .report_state(&tracked.id, &lease, RunState::Planning, 24)
        .await
        .unwrap();
    store
        .report_plan(
            &tracked.id,
            &lease,
            &PlanReport {
                commit_sha: Some("abc123".into()),
                plan: Some(r#"{"add":1,"change":0,"destroy":0}"#.into()),
                outputs: Some("[]".into()),
            },
            25,
        )
        .await
        .unwrap();
    store
        .put_workspace(&tracked.id, &lease, WORKSPACE)
        .await
        .unwrap();
    store
        .put_log_chunk(&tracked.id, &lease, 0, b"plan output\n")
        .await
        .unwrap();
    store
        .park_unconfirmed(&tracked.id, &lease, 1, 26)
        .await
        .unwrap();
    // Parking ended the lease and its credentials: this one, of the ended
    // lease, is a row that no longer grants anything, on either engine.
    store
        .add_run_credential("cred-hash", &tracked.id, &stack.id, &lease, true, 26)
        .await
        .unwrap();
    store
        .lock_state(&stack.id, "lock-1", r#"{"ID":"lock-1"}"#, None, 27)
        .await
        .unwrap();
    // A second task run, READY: dispatch order must survive the move.
    store
        .insert_run(
            &NewRun {
                pool_id: pool.id.clone(),
                run_type: RunType::Task,
                command: vec!["true".into()],
                env: BTreeMap::new(),
                image: None,
            },
            28,
        )
        .await
        .unwrap();
    Seeded {
        stack_id: stack.id,
        task_run: task.id,
        parked_run: tracked.id,
        session: "session-hash".into(),
    }
}

fn state(serial: i64) -> NewStateVersion {
    NewStateVersion {
        serial,
        lineage: "lineage".into(),
        resources: serial,
        sha256: format!("sha-{serial}"),
        data: STATE.to_vec(),
        run_id: None,
    }
}

/// Everything the Store API shows, as text: equal on both engines.
async fn everything(store: &SqlStore, seeded: &Seeded) -> String {
    let mut out = Vec::new();
    out.push(format!("{:?}", store.list_api_tokens().await.unwrap()));
    out.push(format!(
        "{:?}",
        store.find_api_token("hash-admin").await.unwrap()
    ));
    out.push(format!("{:?}", store.list_pools().await.unwrap()));
    out.push(format!(
        "{:?}",
        store.list_workers(None, true).await.unwrap()
    ));
    out.push(format!(
        "{:?}",
        store.find_session(&seeded.session, 6).await.unwrap()
    ));
    let runs = store
        .list_runs(&RunFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    out.push(format!("{runs:?}"));
    for run in &runs {
        out.push(format!(
            "{:?}",
            store.run_transitions(&run.id).await.unwrap()
        ));
        out.push(format!(
            "{:?}",
            store.read_log_chunks(&run.id, 0, 1 << 20).await.unwrap()
        ));
    }
    let stacks = store.list_stacks().await.unwrap();
    out.push(format!("{stacks:?}"));
    out.push(format!(
        "{:?}",
        store.stack_archive(&seeded.stack_id).await.unwrap()
    ));
    out.push(format!(
        "{:?}",
        store.state_versions(&seeded.stack_id).await.unwrap()
    ));
    out.push(format!(
        "{:?}",
        store.state_version(&seeded.stack_id, 1).await.unwrap()
    ));
    out.push(format!(
        "{:?}",
        store.current_state(&seeded.stack_id).await.unwrap()
    ));
    out.push(format!(
        "{:?}",
        store.state_lock(&seeded.stack_id).await.unwrap()
    ));
    out.push(format!(
        "{:?}",
        store.check_run_credential("cred-hash").await.unwrap()
    ));
    out.join("\n")
}

/// Waits until no connection has the SQLite file open (a dropped store's
/// connections close on their own threads, shortly after).
async fn wait_closed(data_dir: &Path) {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&format!(
        "sqlite://{}",
        data_dir.join("gantry.db").display()
    ))
    .unwrap()
    .locking_mode(sqlx::sqlite::SqliteLockingMode::Exclusive);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let free = sqlx::Executor::execute(&mut conn, "BEGIN EXCLUSIVE")
            .await
            .is_ok();
        conn.close().await.unwrap();
        if free {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the store's connections did not close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every table's rows as text, to show that nothing changed.
fn snapshot(url: &str) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            gantry_test_postgres::psql(
                url,
                &format!(
                    "SELECT COUNT(*) || ' ' || COALESCE(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM {} r",
                    t.name
                ),
            )
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs PostgreSQL (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
async fn a_sqlite_store_moves_to_postgres_verified_and_readable_with_the_same_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretsKeyring::generate_key();
    let sqlite = SqlStore::open_sqlite(dir.path(), keyring(&key))
        .await
        .unwrap();
    let seeded = seed(&sqlite).await;
    let before = everything(&sqlite, &seeded).await;
    drop(sqlite);
    wait_closed(dir.path()).await;

    let url = database_url().await;
    let mut events = Vec::new();
    let report = copy_sqlite_to_postgres(dir.path(), &url, |e| {
        events.push(match e {
            CopyEvent::Copying { table } => format!("copying {table}"),
            CopyEvent::Copied { table, rows } => format!("copied {table} {rows}"),
            CopyEvent::Verified(t) => format!("verified {} {}", t.table, t.ok),
        })
    })
    .await
    .unwrap();

    // Every table, in order, verified; the row counts are what was seeded.
    let rows: BTreeMap<&str, u64> = report
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.target_rows))
        .collect();
    assert_eq!(report.tables.len(), TABLES.len());
    assert!(report.tables.iter().all(|t| t.ok), "{report:?}");
    assert!(report
        .tables
        .iter()
        .all(|t| t.source_sha256 == t.target_sha256 && t.source_sha256.len() == 64));
    let expected = [
        ("api_tokens", 2),
        ("pools", 1),
        ("workers", 1),
        ("worker_sessions", 1),
        ("registration_nonces", 1),
        ("runs", 3),
        ("log_chunks", 3),
        ("stacks", 1),
        ("run_workspaces", 1),
        ("run_credentials", 1),
        ("state_versions", 2),
        ("state_locks", 1),
    ];
    for (table, count) in expected {
        assert_eq!(rows[table], count, "{table}");
    }
    assert!(rows["run_transitions"] >= 6, "{rows:?}");
    assert_eq!(report.rows, rows.values().sum::<u64>());
    assert_eq!(events.len(), 3 * TABLES.len());
    assert_eq!(events[0], "copying api_tokens");
    assert_eq!(events[1], "copied api_tokens 2");
    assert_eq!(events.last().unwrap(), "verified state_locks true");
    assert_eq!(report.sequences.len(), 1);
    assert_eq!(report.sequences[0].column, "runs.seq");
    assert_eq!(report.sequences[0].next_value, 4);

    // Ciphertext went across as it was: the clear values are nowhere in PostgreSQL.
    let stored = gantry_test_postgres::psql(&url, "SELECT secret_env FROM stacks");
    assert!(
        !stored.contains(SECRET) && !stored.contains("TOKEN"),
        "{stored}"
    );

    // The same keyring reads everything, secrets decrypted.
    let pg = SqlStore::open_postgres(&url, keyring(&key)).await.unwrap();
    assert_eq!(everything(&pg, &seeded).await, before);
    let stack = pg.find_stack("web").await.unwrap().unwrap();
    assert_eq!(stack.secret_env["TOKEN"], SECRET);
    assert_eq!(
        pg.current_state(&seeded.stack_id).await.unwrap().unwrap().1,
        STATE
    );

    // And goes on from there: the parked run is confirmed, claimed under a
    // new lease, and its stored workspace decrypts; a new run comes after
    // the copied ones in dispatch order.
    pg.confirm_run(&seeded.parked_run, 30).await.unwrap();
    let pool = pg.find_pool("pool-a").await.unwrap().unwrap();
    let worker = &pg.list_workers(None, false).await.unwrap()[0];
    let claimed = pg
        .claim_runs(&pool.id, &worker.id, 5, 1_000, 31)
        .await
        .unwrap();
    let parked = claimed.iter().find(|r| r.id == seeded.parked_run).unwrap();
    let workspace = pg
        .workspace(&parked.id, parked.lease_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(workspace.as_deref(), Some(WORKSPACE));
    let new = pg
        .insert_run(
            &NewRun {
                pool_id: pool.id.clone(),
                run_type: RunType::Task,
                command: vec!["true".into()],
                env: BTreeMap::new(),
                image: None,
            },
            32,
        )
        .await
        .unwrap();
    let seq = gantry_test_postgres::psql(
        &url,
        &format!("SELECT seq FROM runs WHERE id = '{}'", new.id),
    );
    assert_eq!(seq, "4");
    assert!(pg.find_run(&seeded.task_run).await.unwrap().is_some());
    drop(pg);

    // A second copy into the now non-empty database is refused, naming
    // what is there, and changes nothing.
    let snapshot_before = snapshot(&url);
    let err = copy_sqlite_to_postgres(dir.path(), &url, |_| {})
        .await
        .unwrap_err();
    let CopyError::TargetNotEmpty(held) = &err else {
        panic!("{err}");
    };
    assert!(held.contains(&("runs".to_string(), 4)), "{held:?}");
    assert!(err.to_string().contains("runs holds 4 row(s)"), "{err}");
    assert_eq!(snapshot(&url), snapshot_before);
}

#[tokio::test]
#[ignore = "needs PostgreSQL (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
async fn a_copy_that_fails_half_way_leaves_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqlStore::open_sqlite(dir.path(), keyring(&SecretsKeyring::generate_key()))
        .await
        .unwrap();
    seed(&sqlite).await;
    drop(sqlite);
    wait_closed(dir.path()).await;
    // A row PostgreSQL refuses, in a table copied late: a state lock whose
    // lock info is NUL-laden text (PostgreSQL text cannot hold NUL).
    let mut raw = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        dir.path().join("gantry.db").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO state_locks (stack_id, lock_id, info, created_at) VALUES ('s2', 'l', $1, 1)",
    )
    .bind("a\0b")
    .execute(&mut raw)
    .await
    .unwrap();
    raw.close().await.unwrap();

    let url = database_url().await;
    let err = copy_sqlite_to_postgres(dir.path(), &url, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("state_locks"), "{err}");
    // The schema is there; not one row is.
    for row in snapshot(&url) {
        assert_eq!(row, "0", "{row}");
    }
    // Nothing half-written blocks a retry once the source is fixed.
    let mut raw = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        dir.path().join("gantry.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("DELETE FROM state_locks WHERE stack_id = 's2'")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();
    let report = copy_sqlite_to_postgres(dir.path(), &url, |_| {})
        .await
        .unwrap();
    assert!(report.tables.iter().all(|t| t.ok));
}

/// No PostgreSQL needed: the source is refused before the target is touched.
#[tokio::test]
async fn a_copy_from_a_database_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(dir.path(), keyring(&SecretsKeyring::generate_key()))
        .await
        .unwrap();
    seed(&store).await;
    let unreachable = "postgres://gantry:pw@127.0.0.1:1/gantry";
    let err = copy_sqlite_to_postgres(dir.path(), unreachable, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::SourceInUse(_)), "{err}");
    assert!(err.to_string().contains("stop `gantry server`"), "{err}");
    // The store is unharmed and still writes.
    store
        .insert_api_token("later", "hash-later", 40)
        .await
        .unwrap();
    drop(store);
    wait_closed(dir.path()).await;
    // Stopped, the source is taken, and the target is what fails now.
    let err = copy_sqlite_to_postgres(dir.path(), unreachable, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::TargetUnreachable(_)), "{err}");
}

#[tokio::test]
async fn a_data_dir_without_a_database_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = copy_sqlite_to_postgres(dir.path(), "postgres://x@127.0.0.1:1/x", |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::SourceMissing(_)), "{err}");
    assert!(err.to_string().contains("gantry.db"), "{err}");
    assert!(
        !dir.path().join("gantry.db").exists(),
        "the copy created the source"
    );
}
