//! Pools and their stacks on a real SQLite file: a pool with stacks is not
//! deleted, a reset to a new key names what was sealed to the old one and
//! discards the plans no worker can open any more, a stack's auto-apply is
//! kept, and a proposed run's state credential is read-only.

mod common;

use std::collections::BTreeMap;

use gantry_store::SqlStore;
use gantry_store::{
    NewSession, NewWorker, PoolStore, RunRecord, RunStore, SealedToPool, StackRecord, StackStore,
    StoreError, WorkerStore,
};
use gantry_wire::run::{RunState, RunType};

use common::key;

struct Seeded {
    _dir: tempfile::TempDir,
    store: SqlStore,
    pool_id: String,
    worker_id: String,
}

async fn seeded() -> Seeded {
    let (dir, store) = common::store().await;
    let pool = common::pool(&store, "p", key("old")).await;
    let worker = store
        .register_worker(
            &NewWorker {
                pool_id: pool.id.clone(),
                pool_generation: pool.generation,
                version: "test".into(),
                hostname: "h".into(),
                tags: BTreeMap::new(),
                max_concurrent_runs: 4,
            },
            &NewSession {
                worker_id: String::new(),
                token_hash: "session".into(),
                expires_at: i64::MAX,
            },
            1,
        )
        .await
        .unwrap();
    Seeded {
        _dir: dir,
        store,
        pool_id: pool.id,
        worker_id: worker.id,
    }
}

impl Seeded {
    async fn stack(&self, name: &str, secrets: &[&str], auto_apply: bool) -> StackRecord {
        self.store
            .create_stack(
                &StackRecord {
                    name: name.into(),
                    pool_id: self.pool_id.clone(),
                    tool: "terraform".into(),
                    secret_env: secrets
                        .iter()
                        .map(|k| (k.to_string(), "sealed".to_string()))
                        .collect(),
                    auto_apply,
                    ..Default::default()
                },
                None,
                1,
            )
            .await
            .unwrap()
    }

    /// A run on the stack, leased to the worker.
    async fn leased(&self, stack: &StackRecord, run_type: RunType) -> RunRecord {
        let run = self
            .store
            .insert_stack_run(stack, run_type, &[], 2)
            .await
            .unwrap();
        let claimed = self
            .store
            .claim_runs(&self.pool_id, &self.worker_id, 1, i64::MAX, 3)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, run.id);
        claimed.into_iter().next().unwrap()
    }

    /// A tracked run whose plan waits in UNCONFIRMED, its workspace stored.
    async fn unconfirmed(&self, stack: &StackRecord) -> String {
        let run = self.leased(stack, RunType::Tracked).await;
        let lease = run.lease_id.clone().unwrap();
        self.store
            .put_workspace(&run.id, &lease, b"GNTRYENV1 sealed to the old key")
            .await
            .unwrap();
        // `planned` ends only a plan phase.
        self.store
            .report_state(&run.id, &lease, RunState::Planning, 4)
            .await
            .unwrap();
        let parked = self
            .store
            .park_unconfirmed(&run.id, &lease, 0, 4)
            .await
            .unwrap();
        assert_eq!(parked.state, RunState::Unconfirmed);
        run.id
    }
}

#[tokio::test]
async fn a_pool_with_stacks_is_not_deleted_even_with_force() {
    let db = seeded().await;
    db.stack("web", &[], false).await;
    db.stack("db", &[], false).await;
    for force in [false, true] {
        let error = db
            .store
            .delete_pool(&db.pool_id, force, 5)
            .await
            .unwrap_err();
        let StoreError::Conflict(message) = error else {
            panic!("expected a conflict, got {error:?}");
        };
        assert!(message.contains("2 stack(s): db, web"), "{message}");
        assert!(message.contains("gantry stack delete"), "{message}");
    }
    assert!(db.store.find_pool(&db.pool_id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_reset_to_a_new_key_names_sealed_stacks_and_discards_their_waiting_plans() {
    let db = seeded().await;
    let web = db.stack("web", &["TF_VAR_token"], false).await;
    let plain = db.stack("plain", &[], false).await;
    let waiting = db.unconfirmed(&plain).await;

    let sealed = db.store.sealed_to_pool(&db.pool_id).await.unwrap();
    assert_eq!(
        sealed,
        vec![
            SealedToPool {
                stack_id: plain.id.clone(),
                stack_name: "plain".into(),
                secret_env: vec![],
                runs: vec![waiting.clone()],
            },
            SealedToPool {
                stack_id: web.id.clone(),
                stack_name: "web".into(),
                secret_env: vec!["TF_VAR_token".into()],
                runs: vec![],
            },
        ]
    );

    // The same key again (a new token only): nothing is lost.
    let same = db
        .store
        .reset_pool(&db.pool_id, &key("old"), 5)
        .await
        .unwrap();
    assert!(same.discarded.is_empty());
    let run = db.store.find_run(&waiting).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Unconfirmed);

    // A new key: the waiting plan can no longer be opened.
    let reset = db
        .store
        .reset_pool(&db.pool_id, &key("new"), 6)
        .await
        .unwrap();
    assert_eq!(reset.discarded, vec![waiting.clone()]);
    assert_eq!(reset.pool.key.key_fingerprint, "new");
    let run = db.store.find_run(&waiting).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Discarded);
    let reason = run.reason.unwrap();
    assert!(reason.contains("sealed to the old one"), "{reason}");
    // Only the secrets are left to re-enter.
    let sealed = db.store.sealed_to_pool(&db.pool_id).await.unwrap();
    assert_eq!(sealed.len(), 1);
    assert_eq!(sealed[0].stack_name, "web");
}

#[tokio::test]
async fn auto_apply_is_kept_and_updated() {
    let db = seeded().await;
    let on = db.stack("on", &[], true).await;
    let off = db.stack("off", &[], false).await;
    assert!(on.auto_apply);
    assert!(!off.auto_apply);
    let mut changed = off.clone();
    changed.auto_apply = true;
    let updated = db.store.update_stack(&changed, None, 3).await.unwrap();
    assert!(updated.auto_apply);
    assert!(
        db.store
            .find_stack("off")
            .await
            .unwrap()
            .unwrap()
            .auto_apply
    );
}

#[tokio::test]
async fn a_run_credential_is_found_by_its_hash_alone_and_only_while_its_lease_lives() {
    let db = seeded().await;
    let stack = db.stack("web", &[], false).await;
    let run = db.leased(&stack, RunType::Proposed).await;
    let lease = run.lease_id.clone().unwrap();
    db.store
        .add_run_credential("proposed-hash", &run.id, &stack.id, &lease, true, 3)
        .await
        .unwrap();
    let found = db
        .store
        .check_run_credential("proposed-hash")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.run_id, run.id);
    assert_eq!(found.stack_id, stack.id);
    assert_eq!(found.stack_name, "web");
    assert!(found.read_only);
    assert!(db
        .store
        .check_run_credential("other")
        .await
        .unwrap()
        .is_none());

    db.store
        .finish_run(
            &run.id,
            &lease,
            &gantry_store::RunEnd {
                state: RunState::Finished,
                exit_code: Some(0),
                reason: None,
            },
            4,
        )
        .await
        .unwrap();
    assert!(db
        .store
        .check_run_credential("proposed-hash")
        .await
        .unwrap()
        .is_none());
}
