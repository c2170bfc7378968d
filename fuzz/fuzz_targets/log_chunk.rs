//! The log chunk endpoint, driven through the real router and SQLite store
//! with a real worker session: arbitrary sequence numbers, lease headers and
//! bodies must give a 2xx or a JSON error, never a panic.
#![no_main]
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use gantry_server::{AppState, ServerConfig};
use gantry_store::sqlite::SqliteStore;
use gantry_store::{NewPool, NewRun, NewSession, NewWorker, PoolKey, Store};
use libfuzzer_sys::fuzz_target;
use sha2::Digest;
use tower::ServiceExt;

const SESSION: &str = "fuzz-session-token";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    run_id: String,
    lease_id: String,
    _dir: tempfile::TempDir,
}

fn at_rest_keyring() -> gantry_pki::at_rest::SecretsKeyring {
    let key = gantry_pki::at_rest::SecretsKeyring::generate_key();
    gantry_pki::at_rest::SecretsKeyring::parse(&key).unwrap()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (router, run_id, lease_id) = runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(
                SqliteStore::open(dir.path(), at_rest_keyring()).await.unwrap(),
            );
            let key = PoolKey { public_key_pem: String::new(), key_fingerprint: "f".into(), credential_hash: "c".into() };
            let pool = store.create_pool(&NewPool { name: "fuzz".into(), description: String::new(), key }, 0).await.unwrap();
            let worker = NewWorker {
                pool_id: pool.id.clone(),
                pool_generation: pool.generation,
                version: "0".into(),
                hostname: "fuzz".into(),
                tags: Default::default(),
                max_concurrent_runs: 1,
            };
            let hash = hex::encode(sha2::Sha256::digest(SESSION.as_bytes()));
            let session = NewSession { worker_id: String::new(), token_hash: hash, expires_at: i64::MAX };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
            let worker = store.register_worker(&worker, &session, now).await.unwrap();
            let run = NewRun {
                pool_id: pool.id.clone(),
                run_type: gantry_wire::run::RunType::Task,
                command: vec!["true".into()],
                env: Default::default(),
                image: None,
            };
            store.insert_run(&run, now).await.unwrap();
            let leased = store.claim_runs(&pool.id, &worker.id, 1, i64::MAX, now).await.unwrap().remove(0);
            let state = AppState::new(store, ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into()));
            (gantry_server::api::router(state), leased.id, leased.lease_id.unwrap())
        });
        Fixture { runtime, router, run_id, lease_id, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    // First byte picks the lease (right or garbage), the next two the seq, the rest is the body.
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let (seq, body) = if rest.len() >= 2 { (u16::from_le_bytes([rest[0], rest[1]]), &rest[2..]) } else { (0, rest) };
    let lease = if mode % 2 == 0 { fixture.lease_id.clone() } else { String::from_utf8_lossy(body.get(..8).unwrap_or(b"")).into_owned() };
    let mut request = Request::put(format!("/api/v1/worker/runs/{}/logs/{seq}", fixture.run_id))
        .header("authorization", format!("Bearer {SESSION}"));
    if let Ok(value) = axum::http::HeaderValue::from_str(&lease) {
        request = request.header(gantry_wire::LEASE_HEADER, value);
    }
    let request = request.body(Body::from(body.to_vec())).unwrap();
    let response = fixture.runtime.block_on(fixture.router.clone().oneshot(request)).unwrap();
    let status = response.status().as_u16();
    assert!(status == 200 || status == 201 || (400..500).contains(&status), "unexpected status {status}");
});
