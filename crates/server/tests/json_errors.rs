//! Every error the API answers is the JSON error body with its code, even
//! when the request never reaches a handler: a body that is not JSON, a
//! wrong `Content-Type`, a bad query or path value, an unknown route, a
//! method the route does not answer. Driven through the real router and
//! SQLite store, authenticated as a user.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use gantry_pki::at_rest::SecretsKeyring;
use gantry_server::{AppState, ServerConfig};
use gantry_store::SqlStore;
use gantry_store::Store;
use serde_json::Value;
use sha2::Digest;
use tower::ServiceExt;

const TOKEN: &str = "json-errors-admin-token";

struct Fixture {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keyring = SecretsKeyring::parse(&SecretsKeyring::generate_key()).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path(), keyring).await.unwrap());
    let hash = hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()));
    store.insert_api_token("admin", &hash, 0).await.unwrap();
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
    Fixture {
        router: gantry_server::api::router(AppState::new(store, config)),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    allow: Option<String>,
    body: Value,
}

impl Answer {
    /// The JSON error body's `code`, and its `field` ("" when none).
    fn error(&self) -> (&str, &str) {
        assert_eq!(
            self.content_type, "application/json",
            "{}: {}",
            self.status, self.body
        );
        let error = &self.body["error"];
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        (
            error["code"].as_str().unwrap_or_default(),
            error["field"].as_str().unwrap_or_default(),
        )
    }
}

async fn call(
    fixture: &Fixture,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let response = fixture
        .router
        .clone()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_string())
    };
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let allow = header(header::ALLOW);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        content_type,
        allow,
        body,
    }
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn a_body_that_is_not_json_is_invalid_input() {
    let fixture = fixture().await;
    for body in [
        &b"{\"name\": "[..],
        b"\x00",
        b"{\"name\": \"a\"",
        b"{\"name\": \"a\", \"csr\": \"c\"} {}",
        b"",
    ] {
        let answer = call(&fixture, Method::POST, "/api/v1/pools", JSON, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(answer.error(), ("invalid_input", "body"), "{body:?}");
    }
}

#[tokio::test]
async fn json_of_the_wrong_shape_names_the_field() {
    let fixture = fixture().await;
    let cases: [(&str, &str, &str); 4] = [
        (
            "/api/v1/runs",
            r#"{"pool": "p", "command": "echo hi"}"#,
            "command",
        ),
        (
            "/api/v1/runs",
            r#"{"pool": "p", "command": ["echo", 1]}"#,
            "command[1]",
        ),
        ("/api/v1/runs", r#"{"command": ["true"]}"#, "pool"),
        ("/api/v1/tokens", r#"{"name": null}"#, "name"),
    ];
    for (uri, body, field) in cases {
        let answer = call(&fixture, Method::POST, uri, JSON, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error(), ("invalid_input", field), "{body}");
    }
}

#[tokio::test]
async fn a_body_not_sent_as_json_is_unsupported_media_type() {
    let fixture = fixture().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let answer = call(
            &fixture,
            Method::POST,
            "/api/v1/tokens",
            content_type,
            r#"{"name": "ci"}"#,
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(answer.error(), ("unsupported_media_type", "Content-Type"));
    }
    // With parameters, it is JSON.
    let answer = call(
        &fixture,
        Method::POST,
        "/api/v1/tokens",
        Some("application/json; charset=utf-8"),
        r#"{"name": "ci"}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

#[tokio::test]
async fn a_body_over_the_limit_is_payload_too_large() {
    let fixture = fixture().await;
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(5 * 1024 * 1024));
    let answer = call(&fixture, Method::POST, "/api/v1/tokens", JSON, big).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error(), ("payload_too_large", "body"));
}

#[tokio::test]
async fn a_bad_query_value_names_the_parameter() {
    let fixture = fixture().await;
    let cases = [
        ("/api/v1/pools/p?force=null", Method::DELETE, "force"),
        (
            "/api/v1/pools/p?force=null&force=null",
            Method::DELETE,
            "force",
        ),
        ("/api/v1/runs?limit=-1", Method::GET, "limit"),
        ("/api/v1/runs/r/logs?wait=soon", Method::GET, "wait"),
        ("/api/v1/workers?all=maybe", Method::GET, "all"),
    ];
    for (uri, method, field) in cases {
        let answer = call(&fixture, method, uri, None, Body::empty()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(answer.error(), ("invalid_input", field), "{uri}");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{uri}: {}",
            answer.body
        );
    }
}

#[tokio::test]
async fn a_bad_path_value_names_the_parameter() {
    let fixture = fixture().await;
    let cases = [
        (
            "/api/v1/stacks/s/state/versions/9223372036854775808",
            "version",
        ),
        ("/api/v1/stacks/s/state/versions/latest", "version"),
        ("/api/v1/pools/%FF", "pool"),
    ];
    for (uri, field) in cases {
        let answer = call(&fixture, Method::GET, uri, None, Body::empty()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(answer.error(), ("invalid_input", field), "{uri}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let fixture = fixture().await;
    // `/` is the web UI's (its pages are HTML); everything unknown is JSON.
    for uri in [
        "/api/v1/nothing",
        "/api/v1/runs//logs",
        "/elsewhere",
        "/ui/nothing",
    ] {
        let answer = call(&fixture, Method::GET, uri, None, Body::empty()).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(answer.error().0, "not_found", "{uri}");
    }
    let answer = call(
        &fixture,
        Method::DELETE,
        "/api/v1/runs",
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.error().0, "method_not_allowed");
    let allow = answer.allow.unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn worker_calls_without_a_session_answer_json() {
    let fixture = fixture().await;
    let answer = call(
        &fixture,
        Method::PUT,
        "/api/v1/worker/runs/r/logs/not-a-number",
        Some("application/octet-stream"),
        "log",
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error().0, "unauthorized");
    let answer = call(&fixture, Method::POST, "/api/v1/worker/register", JSON, "{").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error(), ("invalid_input", "body"));
}
