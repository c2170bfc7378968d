//! A launcher facing a control plane whose certificate it cannot accept
//! says at once, at error level, what failed and which setting fixes it,
//! and exits 1: certificate and hostname errors are not transient.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::pki::*;
use support::*;

/// A control plane on HTTPS with a certificate for `sans` from a private
/// CA; returns it with the seed-format bundle of that CA.
fn tls_server(dir: &Path, sans: &str) -> (Server, String) {
    private_pki_for(dir, sans);
    let chain = dir.join("chain.pem");
    let key = dir.join("leaf.key");
    let server = Server::start_args(&[
        "--tls-cert",
        chain.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let bundle = seed_bundle(dir, &["root.pem"]);
    (server, bundle)
}

/// Creates a pool over the API, whatever the certificate says.
fn create_pool(server: &Server, name: &str) -> Pool {
    let generated = gantry_pki::generate(2048, name).unwrap();
    let created: Value = server
        .http()
        .post(format!("{}/api/v1/pools", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "name": name, "csr": generated.csr_pem }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    Pool {
        name: name.into(),
        id: created["id"].as_str().unwrap().into(),
        token: created["token"].as_str().unwrap().into(),
        private_key_pem: generated.private_key_pem,
    }
}

/// Runs the launcher with a long register timeout; returns its exit code,
/// stderr, and how long it took.
fn launcher_against(pool: &Pool, env: &[(&str, &str)]) -> (i32, String, Duration) {
    let mut env = env.to_vec();
    env.push(("GANTRY_REGISTER_TIMEOUT", "60s"));
    let started = Instant::now();
    let (code, stderr) = launcher_exit(Some(pool), &env);
    (code, stderr, started.elapsed())
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(r#""level":"ERROR""#))
        .collect()
}

#[test]
fn an_unknown_ca_stops_the_launcher_at_once_naming_gantry_additional_root_cas() {
    if !require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _bundle) = tls_server(dir.path(), "IP:127.0.0.1,DNS:localhost");
    let pool = create_pool(&server, "untrusted");
    let (code, stderr, took) = launcher_against(&pool, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {stderr}");
    let errors = error_lines(&stderr);
    assert!(
        errors
            .iter()
            .any(|l| l.contains("GANTRY_ADDITIONAL_ROOT_CAS") && l.contains("not trust")),
        "{stderr}"
    );
    assert!(
        !stderr.contains(r#""level":"WARN""#),
        "no retries for a certificate problem: {stderr}"
    );
}

#[test]
fn a_certificate_for_another_host_stops_the_launcher_at_once_naming_the_host() {
    if !require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, bundle) = tls_server(dir.path(), "DNS:elsewhere.example");
    let pool = create_pool(&server, "misnamed");
    let (code, stderr, took) = launcher_against(&pool, &[("GANTRY_ADDITIONAL_ROOT_CAS", &bundle)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {stderr}");
    let errors = error_lines(&stderr);
    assert!(
        errors
            .iter()
            .any(|l| l.contains("not valid for the host 127.0.0.1 ")),
        "{stderr}"
    );
}

/// Every retry loop warns at its first failure, then reminds about every
/// 30 s, instead of staying silent (or logging every attempt).
#[test]
fn an_unreachable_control_plane_is_warned_about_at_the_first_failure() {
    let server = Server::start();
    let pool = server.create_pool("gone");
    drop(server);
    let (code, stderr, _) = {
        let started = Instant::now();
        let (code, stderr) = launcher_exit(Some(&pool), &[("GANTRY_REGISTER_TIMEOUT", "3s")]);
        (code, stderr, started.elapsed())
    };
    assert_eq!(code, 1, "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) && l.contains("registration"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, not one per attempt: {stderr}"
    );
    assert!(
        warnings[0].contains("registration failed; retrying"),
        "{stderr}"
    );
}
