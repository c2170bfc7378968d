//! Claims under contention: 8 claimers racing over 1,000 READY runs take
//! each run exactly once, with a lease of its own. On SQLite the single
//! writer serializes them; on PostgreSQL they really race, through
//! `FOR UPDATE SKIP LOCKED`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use gantry_store::{NewRun, RunStore, SqlStore};
use gantry_wire::run::{RunState, RunType};

const RUNS: usize = 1_000;
const CLAIMERS: usize = 8;

async fn each_run_is_claimed_exactly_once(store: SqlStore) {
    let store = Arc::new(store);
    let pool = common::pool(&store, "contended", common::key("fp")).await;
    for i in 0..RUNS {
        store
            .insert_run(
                &NewRun {
                    pool_id: pool.id.clone(),
                    run_type: RunType::Task,
                    command: vec!["true".into(), i.to_string()],
                    env: Default::default(),
                    image: None,
                },
                1,
            )
            .await
            .unwrap();
    }
    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|c| {
            let store = store.clone();
            let pool_id = pool.id.clone();
            tokio::spawn(async move {
                let worker = format!("worker-{c}");
                let mut taken = Vec::new();
                loop {
                    // Up to 3 at a time, as a launcher with 3 slots polls.
                    let claimed = store
                        .claim_runs(&pool_id, &worker, 3, 1_000_000, 2)
                        .await
                        .unwrap();
                    if claimed.is_empty() {
                        return taken;
                    }
                    taken.extend(claimed);
                }
            })
        })
        .collect();
    let mut by_run: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut per_claimer = Vec::new();
    for claimer in claimers {
        let taken = claimer.await.unwrap();
        per_claimer.push(taken.len());
        for run in taken {
            assert_eq!(run.state, RunState::Preparing);
            by_run.entry(run.id.clone()).or_default().push((
                run.worker_id.clone().unwrap(),
                run.lease_id.clone().unwrap(),
            ));
        }
    }
    assert_eq!(by_run.len(), RUNS, "every run claimed");
    for (run, claims) in &by_run {
        assert_eq!(
            claims.len(),
            1,
            "run {run} claimed {} times: {claims:?}",
            claims.len()
        );
        let stored = store.find_run(run).await.unwrap().unwrap();
        assert_eq!(
            (stored.worker_id.unwrap(), stored.lease_id.unwrap()),
            claims[0],
            "the store agrees with the claimer"
        );
        let transitions = store.run_transitions(run).await.unwrap();
        let states: Vec<RunState> = transitions.iter().map(|t| t.state).collect();
        assert_eq!(
            states,
            [RunState::Queued, RunState::Ready, RunState::Preparing]
        );
    }
    let leases: std::collections::HashSet<_> = by_run.values().map(|c| c[0].1.clone()).collect();
    assert_eq!(leases.len(), RUNS, "every lease ID is new");
    eprintln!("claims per claimer: {per_claimer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_claimers_take_each_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = gantry_pki::at_rest::SecretsKeyring::parse(
        &gantry_pki::at_rest::SecretsKeyring::generate_key(),
    )
    .unwrap();
    let store = SqlStore::open_sqlite(dir.path(), keyring).await.unwrap();
    each_run_is_claimed_exactly_once(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
async fn postgres_claimers_take_each_run_exactly_once() {
    each_run_is_claimed_exactly_once(common::postgres_store().await).await;
}
