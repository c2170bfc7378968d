//! The launcher protocol spoken directly: what a launcher of another version,
//! a thief with only the token, or a replayed registration gets.

mod support;

use base64::Engine;
use gantry_pki::PoolPrivateKey;
use gantry_wire::token::PoolToken;
use gantry_wire::worker::{registration_message, RegisterRequest};
use serde_json::Value;
use support::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn signed(pool: &Pool, key: &PoolPrivateKey, version: &str, nonce: &str) -> RegisterRequest {
    let token = PoolToken::decode(&pool.token).unwrap();
    let timestamp_ms = now_ms();
    let signature = key.sign(&registration_message(&token.pool_id, timestamp_ms, nonce));
    RegisterRequest {
        pool_id: token.pool_id,
        credential: token.credential,
        version: version.into(),
        hostname: "test".into(),
        tags: Default::default(),
        max_concurrent_runs: 1,
        timestamp_ms,
        nonce: nonce.into(),
        signature: base64::engine::general_purpose::STANDARD.encode(signature),
        orphaned_runs: vec![],
        resume_worker_id: None,
    }
}

fn register(server: &Server, request: &RegisterRequest) -> (u16, Value) {
    let response = server
        .http()
        .post(format!("{}/api/v1/worker/register", server.url))
        .json(request)
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

#[test]
fn registration_needs_the_key_the_right_version_and_a_fresh_nonce() {
    let server = Server::start();
    let pool = server.create_pool("proto");
    let key: PoolPrivateKey = pool.private_key_pem.parse().unwrap();

    let (status, body) = register(&server, &signed(&pool, &key, "9.9.0", "nonce-version-0001"));
    assert_eq!(status, 426);
    assert_eq!(body["error"]["code"], "version_refused");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("use gantry-launcher {}", gantry_wire::VERSION)),
        "{message}"
    );
    assert!(message.contains("/api/v1/launcher/download"), "{message}");

    // A stolen token without the key: signed with another key.
    let thief: PoolPrivateKey = gantry_pki::generate(2048, "thief")
        .unwrap()
        .private_key_pem
        .parse()
        .unwrap();
    let (status, body) = register(
        &server,
        &signed(&pool, &thief, gantry_wire::VERSION, "nonce-thief-00001"),
    );
    assert_eq!(status, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("signature does not verify"));

    let request = signed(&pool, &key, gantry_wire::VERSION, "nonce-good-000001");
    let (status, body) = register(&server, &request);
    assert_eq!(status, 200, "{body}");
    assert!(body["session_token"]
        .as_str()
        .unwrap()
        .starts_with("gantry_session_"));

    // The same signed request again is a replay.
    let (status, body) = register(&server, &request);
    assert_eq!(status, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("replayed"));

    // The stale-clock case.
    let mut stale = signed(&pool, &key, gantry_wire::VERSION, "nonce-stale-00001");
    stale.timestamp_ms -= 3_600_000;
    let token = PoolToken::decode(&pool.token).unwrap();
    stale.signature = base64::engine::general_purpose::STANDARD.encode(key.sign(
        &registration_message(&token.pool_id, stale.timestamp_ms, &stale.nonce),
    ));
    let (status, body) = register(&server, &stale);
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("clock"));
}

#[test]
fn the_api_answers_json_errors_and_documents_itself() {
    let server = Server::start();
    let http = server.http();
    let response = http
        .get(format!("{}/api/v1/pools", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let response = http
        .get(format!("{}/api/v1/nope", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().unwrap()["error"]["code"],
        "not_found"
    );

    let response = http
        .post(format!("{}/api/v1/runs", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"pool": "x", "command": []}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"]["field"], "command");

    let doc: Value = http
        .get(format!("{}/api/v1/openapi.json", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/pools",
        "/runs",
        "/runs/{run}/logs",
        "/workers",
        "/worker/register",
        "/worker/poll",
        "/worker/runs/{run}/logs/{seq}",
    ] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
    assert!(doc["components"]["schemas"]["Run"].is_object());
}

#[test]
fn the_server_serves_its_launcher() {
    let server = Server::start();
    let response = server
        .http()
        .get(format!("{}/api/v1/launcher/download", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let sha = response.headers()["x-gantry-sha256"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = response.bytes().unwrap();
    assert_eq!(bytes, std::fs::read(launcher_bin()).unwrap());
    use sha2::Digest;
    assert_eq!(sha, hex::encode(sha2::Sha256::digest(&bytes)));
}
