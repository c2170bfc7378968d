//! What keeps idle workers cheap, on both engines: `last_seen` written for
//! many workers in one call (and never moved back), and expired nonces and
//! sessions cleared by a duty instead of by each registration.

mod common;

use gantry_store::SqlStore;
use gantry_store::{NewSession, NewWorker, PoolRecord, WorkerStore};

async fn register(store: &SqlStore, pool: &PoolRecord, i: usize, expires_at: i64) -> String {
    let worker = NewWorker {
        pool_id: pool.id.clone(),
        pool_generation: pool.generation,
        version: "0".into(),
        hostname: format!("host-{i}"),
        tags: Default::default(),
        max_concurrent_runs: 1,
    };
    let session = NewSession {
        worker_id: String::new(),
        token_hash: format!("session-{i}"),
        expires_at,
    };
    store
        .register_worker(&worker, &session, 10)
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn touch_workers_writes_last_seen_for_all_in_one_call() {
    let (_dir, store) = common::store().await;
    let pool = common::pool(&store, "p", common::key("fp")).await;
    // More than one statement's worth (500), and one never heard from.
    // Each is heard at its own time.
    let mut ids = Vec::new();
    for i in 0..1_201 {
        ids.push(register(&store, &pool, i, i64::MAX).await);
    }
    let silent = ids.pop().unwrap();
    let mut heard: Vec<(String, i64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), 5_000 + i as i64))
        .collect();
    store.touch_workers(&heard).await.unwrap();
    // A later batch that carries an older time moves nothing back.
    heard.truncate(3);
    for (_, at) in &mut heard {
        *at = 4_000;
    }
    store.touch_workers(&heard).await.unwrap();

    let workers = store.list_workers(Some(&pool.id), false).await.unwrap();
    assert_eq!(workers.len(), 1_201);
    for worker in workers {
        let expected = match ids.iter().position(|id| *id == worker.id) {
            Some(i) => 5_000 + i as i64, // each its own time
            None => 10,
        };
        assert_eq!(worker.last_seen, expected, "worker {}", worker.hostname);
    }
    assert!(ids.iter().all(|id| *id != silent));
    store.touch_workers(&[]).await.unwrap();
}

#[tokio::test]
async fn expired_nonces_and_sessions_are_purged_and_live_ones_kept() {
    let (_dir, store) = common::store().await;
    let pool = common::pool(&store, "p", common::key("fp")).await;
    assert!(store.use_nonce("nonce-old", 1_000).await.unwrap());
    assert!(store.use_nonce("nonce-live", 9_000).await.unwrap());
    // Until it is purged, an expired nonce is still refused: registration
    // never depends on the purge having run.
    assert!(!store.use_nonce("nonce-old", 1_000).await.unwrap());
    register(&store, &pool, 1, 1_000).await;
    register(&store, &pool, 2, 9_000).await;

    let purged = store.purge_expired(5_000).await.unwrap();
    assert_eq!(purged, 2, "one nonce and one session had expired");
    assert!(!store.use_nonce("nonce-live", 9_000).await.unwrap());
    assert!(store
        .find_session("session-2", 5_000)
        .await
        .unwrap()
        .is_some());
    assert!(store.find_session("session-1", 0).await.unwrap().is_none());
    assert_eq!(store.purge_expired(5_000).await.unwrap(), 0);
}
