//! The log chunk endpoint, `PUT /api/v1/worker/runs/{run}/logs/{seq}`,
//! driven through the real router and SQLite store with a real worker
//! session: arbitrary sequence numbers, lease headers and bodies must give a
//! 2xx or a 4xx, never a panic nor a 5xx.
//!
//! Input: one flags byte, eight bytes of `seq` (little-endian u64), then the
//! body. Flags: bits 0-1 the lease header (0, 1: the run's lease; 2: eight
//! bytes of the body; 3: none); bit 2 the run (a task run, or a stack run in
//! its apply phase, whose chunks are stored after its plan phase's, at
//! `log_base + seq`); bit 3 a wrong session token.
#![no_main]
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use gantry_pki::at_rest::SecretsKeyring;
use gantry_server::{AppState, ServerConfig};
use gantry_store::SqlStore;
use gantry_store::{NewPool, NewRun, NewSession, NewWorker, PoolKey, StackRecord, Store};
use gantry_wire::run::{RunState, RunType};
use libfuzzer_sys::fuzz_target;
use sha2::Digest;
use tower::ServiceExt;

const SESSION: &str = "fuzz-session-token";
/// Chunks the stack run's plan phase reported: its apply phase's log_base.
const PLAN_CHUNKS: u64 = 3;

struct Run {
    id: String,
    lease_id: String,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    task: Run,
    apply: Run,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (router, task, apply) = runtime.block_on(async {
            let keyring = SecretsKeyring::parse(&SecretsKeyring::generate_key()).unwrap();
            let store: Arc<dyn Store> =
                Arc::new(SqlStore::open_sqlite(dir.path(), keyring).await.unwrap());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let key = PoolKey {
                public_key_pem: String::new(),
                key_fingerprint: "f".into(),
                credential_hash: "c".into(),
            };
            let pool = store
                .create_pool(
                    &NewPool {
                        name: "fuzz".into(),
                        description: String::new(),
                        key,
                    },
                    now,
                )
                .await
                .unwrap();
            let worker = NewWorker {
                pool_id: pool.id.clone(),
                pool_generation: pool.generation,
                version: "0".into(),
                hostname: "fuzz".into(),
                tags: Default::default(),
                max_concurrent_runs: 2,
            };
            let hash = hex::encode(sha2::Sha256::digest(SESSION.as_bytes()));
            let session = NewSession {
                worker_id: String::new(),
                token_hash: hash,
                expires_at: i64::MAX,
            };
            let worker = store.register_worker(&worker, &session, now).await.unwrap();

            // A task run, leased: its chunks are stored at `seq`.
            let run = NewRun {
                pool_id: pool.id.clone(),
                run_type: RunType::Task,
                command: vec!["true".into()],
                env: Default::default(),
                image: None,
            };
            store.insert_run(&run, now).await.unwrap();
            let leased = store
                .claim_runs(&pool.id, &worker.id, 1, i64::MAX, now)
                .await
                .unwrap()
                .remove(0);
            let task = Run {
                id: leased.id,
                lease_id: leased.lease_id.unwrap(),
            };

            // A tracked stack run planned (PLAN_CHUNKS chunks), confirmed and
            // leased again to apply: its chunks are stored at `log_base + seq`.
            let stack = StackRecord {
                name: "fuzz".into(),
                pool_id: pool.id.clone(),
                git_url: Some("https://example.com/infra.git".into()),
                git_ref: Some("main".into()),
                project_root: ".".into(),
                tool: "terraform".into(),
                ..Default::default()
            };
            let stack = store.create_stack(&stack, None, now).await.unwrap();
            let run = store
                .insert_stack_run(&stack, RunType::Tracked, &[], now)
                .await
                .unwrap();
            let plan = store
                .claim_runs(&pool.id, &worker.id, 1, i64::MAX, now)
                .await
                .unwrap()
                .remove(0);
            assert_eq!(plan.id, run.id);
            let plan_lease = plan.lease_id.unwrap();
            // `planned` ends only a plan phase.
            store
                .report_state(&run.id, &plan_lease, RunState::Planning, now)
                .await
                .unwrap();
            store
                .put_workspace(&run.id, &plan_lease, b"sealed")
                .await
                .unwrap();
            store
                .park_unconfirmed(&run.id, &plan_lease, PLAN_CHUNKS, now)
                .await
                .unwrap();
            store.confirm_run(&run.id, now).await.unwrap();
            let applying = store
                .claim_runs(&pool.id, &worker.id, 1, i64::MAX, now)
                .await
                .unwrap()
                .remove(0);
            assert_eq!(applying.log_base, PLAN_CHUNKS as i64);
            let apply = Run {
                id: applying.id,
                lease_id: applying.lease_id.unwrap(),
            };

            let state = AppState::new(
                store,
                ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into()),
            );
            (gantry_server::api::router(state), task, apply)
        });
        Fixture {
            runtime,
            router,
            task,
            apply,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let (flags, rest) = data.split_first().unwrap_or((&0, &[]));
    let (seq, body) = match rest.split_first_chunk::<8>() {
        Some((seq, body)) => (u64::from_le_bytes(*seq), body),
        None => (0, rest),
    };
    let run = if flags & 0b100 == 0 {
        &fixture.task
    } else {
        &fixture.apply
    };
    let session = if flags & 0b1000 == 0 {
        SESSION
    } else {
        "fuzz-wrong-session"
    };
    let lease = match flags & 0b11 {
        0 | 1 => Some(run.lease_id.clone()),
        2 => Some(String::from_utf8_lossy(body.get(..8).unwrap_or(body)).into_owned()),
        _ => None,
    };
    let mut request = Request::put(format!("/api/v1/worker/runs/{}/logs/{seq}", run.id))
        .header("authorization", format!("Bearer {session}"));
    if let Some(Ok(value)) = lease.map(|l| axum::http::HeaderValue::from_str(&l)) {
        request = request.header(gantry_wire::LEASE_HEADER, value);
    }
    let request = request.body(Body::from(body.to_vec())).unwrap();
    let response = fixture
        .runtime
        .block_on(fixture.router.clone().oneshot(request))
        .unwrap();
    let status = response.status().as_u16();
    assert!(
        matches!(status, 200 | 201 | 400..=499),
        "unexpected status {status}"
    );
});
