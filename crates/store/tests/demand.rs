//! Demand on a pool, on either engine: only runs a worker could take
//! now are pending (not UNCONFIRMED, not QUEUED behind a stack run), and
//! draining for scale-in is atomic with the claim: a busy worker is not
//! drained, and a drained worker is never given a run.

mod common;

use std::collections::BTreeMap;

use gantry_store::SqlStore;
use gantry_store::{
    DemandStore, NewRun, NewSession, NewWorker, PoolRecord, RunStore, StackRecord, StackStore,
    WorkerStore,
};
use gantry_wire::run::{RunState, RunType};

async fn worker(store: &SqlStore, pool: &PoolRecord, instance: &str, now: i64) -> String {
    let tags = BTreeMap::from([("instance_id".to_string(), instance.to_string())]);
    store
        .register_worker(
            &NewWorker {
                pool_id: pool.id.clone(),
                pool_generation: pool.generation,
                version: "test".into(),
                hostname: instance.into(),
                tags,
                max_concurrent_runs: 1,
            },
            &NewSession {
                worker_id: String::new(),
                token_hash: format!("session-{instance}"),
                expires_at: i64::MAX,
            },
            now,
        )
        .await
        .unwrap()
        .id
}

async fn task(store: &SqlStore, pool: &PoolRecord, now: i64) -> String {
    store
        .insert_run(
            &NewRun {
                pool_id: pool.id.clone(),
                run_type: RunType::Task,
                command: vec!["true".into()],
                env: BTreeMap::new(),
                image: None,
            },
            now,
        )
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn only_runs_a_worker_could_take_now_are_pending() {
    let (_dir, store) = common::store().await;
    let pool = common::pool(&store, "p", common::key("k")).await;
    let other = common::pool(&store, "q", common::key("k2")).await;
    let w = worker(&store, &pool, "i-1", 1).await;
    let stack = store
        .create_stack(
            &StackRecord {
                name: "web".into(),
                pool_id: pool.id.clone(),
                tool: "terraform".into(),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap();
    // A tracked run planned and waiting for a person: UNCONFIRMED.
    let planned = store
        .insert_stack_run(&stack, RunType::Tracked, &[], 2)
        .await
        .unwrap();
    let lease = store
        .claim_runs(&pool.id, &w, 1, i64::MAX, 3)
        .await
        .unwrap()[0]
        .lease_id
        .clone()
        .unwrap();
    store
        .put_workspace(&planned.id, &lease, b"sealed")
        .await
        .unwrap();
    store
        .report_state(&planned.id, &lease, RunState::Planning, 4)
        .await
        .unwrap();
    store
        .park_unconfirmed(&planned.id, &lease, 0, 5)
        .await
        .unwrap();
    // Two more runs on the stack: QUEUED behind the unconfirmed one.
    for now in [6, 7] {
        let queued = store
            .insert_stack_run(&stack, RunType::Proposed, &[], now)
            .await
            .unwrap();
        assert_eq!(queued.state, RunState::Queued);
    }
    // Two task runs: READY.
    task(&store, &pool, 8).await;
    task(&store, &pool, 9).await;
    task(&store, &other, 9).await;

    let demand = store.pool_demand(Some(&pool.id)).await.unwrap();
    assert_eq!(demand.len(), 1);
    assert_eq!(demand[0].runs_pending, 2, "READY task runs only");
    assert_eq!(demand[0].workers.len(), 1);
    assert_eq!(demand[0].workers[0].running, 0);
    assert_eq!(
        demand[0].workers[0].idle_since, 5,
        "idle since its run was parked"
    );
    assert_eq!(demand[0].workers[0].tags["instance_id"], "i-1");

    let all = store.pool_demand(None).await.unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|p| (p.pool_name.as_str(), p.runs_pending))
        .collect();
    assert_eq!(names, [("p", 2), ("q", 1)]);
}

#[tokio::test]
async fn a_busy_worker_is_not_drained_and_a_drained_one_gets_no_run() {
    let (_dir, store) = common::store().await;
    let pool = common::pool(&store, "p", common::key("k")).await;
    let busy = worker(&store, &pool, "i-busy", 1).await;
    let idle = worker(&store, &pool, "i-idle", 1).await;
    let run = task(&store, &pool, 2).await;
    let claimed = store
        .claim_runs(&pool.id, &busy, 1, i64::MAX, 3)
        .await
        .unwrap();
    assert_eq!(claimed[0].id, run);

    let refused = store.drain_worker_if_idle(&busy).await.unwrap();
    assert!(!refused.drained);
    assert!(!refused.worker.drain, "a busy worker is left as it was");
    assert_eq!(refused.worker.running, [run]);

    let drained = store.drain_worker_if_idle(&idle).await.unwrap();
    assert!(drained.drained);
    assert!(drained.worker.drain);
    // Idempotent: still idle, still drained.
    assert!(store.drain_worker_if_idle(&idle).await.unwrap().drained);

    // A run made READY after the drain: the drained worker's poll (which
    // may have looked before the drain) claims nothing.
    let waiting = task(&store, &pool, 4).await;
    assert!(store
        .claim_runs(&pool.id, &idle, 1, i64::MAX, 5)
        .await
        .unwrap()
        .is_empty());
    let demand = store.pool_demand(Some(&pool.id)).await.unwrap();
    assert_eq!(demand[0].runs_pending, 1);
    // Undrained, it takes it.
    store.set_worker_drain(&idle, false).await.unwrap();
    let claimed = store
        .claim_runs(&pool.id, &idle, 1, i64::MAX, 6)
        .await
        .unwrap();
    assert_eq!(claimed[0].id, waiting);

    store.deregister_worker(&idle, 7).await.unwrap();
    assert!(
        store.drain_worker_if_idle(&idle).await.is_err(),
        "a gone worker"
    );
}

/// A claim and a drain of one idle worker, racing 200 times: never both.
async fn drain_and_claim_race(store: SqlStore) {
    let store = std::sync::Arc::new(store);
    let pool = common::pool(&store, "race", common::key("fp")).await;
    for round in 0..200 {
        let id = worker(&store, &pool, &format!("i-{round}"), 1).await;
        store
            .insert_run(
                &NewRun {
                    pool_id: pool.id.clone(),
                    run_type: RunType::Task,
                    command: vec!["true".into()],
                    env: Default::default(),
                    image: None,
                },
                2,
            )
            .await
            .unwrap();
        let (claiming, draining) = (store.clone(), store.clone());
        let (pool_id, worker_id) = (pool.id.clone(), id.clone());
        let claim = tokio::spawn(async move {
            claiming
                .claim_runs(&pool_id, &worker_id, 1, 1_000_000, 3)
                .await
                .unwrap()
        });
        let drain = tokio::spawn(async move { draining.drain_worker_if_idle(&id).await.unwrap() });
        let (claimed, drained) = (claim.await.unwrap(), drain.await.unwrap());
        assert!(
            !drained.drained || claimed.is_empty(),
            "round {round}: the worker was drained and given a run"
        );
        // Whatever won, end the round with nothing pending or held.
        for run in claimed {
            store
                .finish_run(
                    &run.id,
                    run.lease_id.as_deref().unwrap(),
                    &gantry_store::RunEnd {
                        state: RunState::Finished,
                        exit_code: Some(0),
                        reason: None,
                    },
                    4,
                )
                .await
                .unwrap();
        }
        if drained.drained {
            let left = store
                .claim_runs(&pool.id, "someone-else", 1, 1_000_000, 5)
                .await
                .unwrap();
            for run in left {
                store.request_stop(&run.id, 6).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_racing_claim_and_drain_never_both_win() {
    let (_dir, store) = common::store().await;
    drain_and_claim_race(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
async fn postgres_a_racing_claim_and_drain_never_both_win() {
    drain_and_claim_race(common::postgres_store().await).await;
}
