//! Security: TLS with private CAs (in the seed's bundle format), API tokens,
//! worker isolation, masking. (Failed-auth limits: auth_limits.rs.)

mod support;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use gantry_wire::token::PoolToken;
use serde_json::Value;
use support::pki::*;
use support::*;

#[test]
fn tls_with_a_private_root_and_intermediate_ca() {
    if !require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    private_pki(dir.path());
    let chain = dir.path().join("chain.pem");
    let key = dir.path().join("leaf.key");
    let server = Server::start_args(&[
        "--tls-cert",
        chain.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(server.url.starts_with("https://"));
    let bundle = seed_bundle(dir.path(), &["root.pem"]);

    // Without the CA, the CLI refuses the server's certificate.
    let out = server.cli(&["pool", "list"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With the bundle, everything works end to end, launcher included.
    let generated = gantry_pki::generate(2048, "tls").unwrap();
    let csr = dir.path().join("pool.csr");
    std::fs::write(&csr, &generated.csr_pem).unwrap();
    let out = Command::new(gantry_bin())
        .args([
            "pool",
            "create",
            "tls",
            "--csr",
            csr.to_str().unwrap(),
            "--output",
            "json",
        ])
        .env("GANTRY_URL", &server.url)
        .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
        .env("GANTRY_ADDITIONAL_ROOT_CAS", &bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(PoolToken::decode(&token)
        .unwrap()
        .url
        .starts_with("https://"));
    let pool = Pool {
        name: "tls".into(),
        id: created["id"].as_str().unwrap().into(),
        token,
        private_key_pem: generated.private_key_pem,
    };

    let (code, stderr) = launcher_exit(Some(&pool), &[("GANTRY_REGISTER_TIMEOUT", "1s")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "without the CA the launcher names the certificate problem: {stderr}"
    );

    let launcher = Launcher::start(&pool, &[("GANTRY_ADDITIONAL_ROOT_CAS", &bundle)]);
    launcher.wait_registered();
    let out = Command::new(gantry_bin())
        .args([
            "run", "submit", "--pool", "tls", "--wait", "--", "echo", "over tls",
        ])
        .env("GANTRY_URL", &server.url)
        .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
        .env("GANTRY_ADDITIONAL_ROOT_CAS", &bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");

    // `ca-bundle decode` shows what the bundle holds; `encode` makes the same kind.
    let bundle2 = seed_bundle(dir.path(), &["root.pem", "chain.pem"]);
    let decoded = server.cli_json(&["ca-bundle", "decode", &bundle2]);
    let subjects: Vec<&str> = decoded
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        ["CN=Test Root CA", "CN=gantry", "CN=Test Intermediate CA"]
    );
    let encoded = server.cli_json(&[
        "ca-bundle",
        "encode",
        dir.path().join("root.pem").to_str().unwrap(),
    ]);
    assert_eq!(
        gantry_pki::ca_bundle::decode(encoded["bundle"].as_str().unwrap())
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn development_tls_prints_how_to_trust_it() {
    let server = Server::start_args(&["--tls-dev"]);
    assert!(
        server.proc.log().contains("gantry ca-bundle encode"),
        "{}",
        server.proc.log()
    );
    let ca = server.data_dir.join("tls/ca.pem");
    let bundle = server.cli_json(&["ca-bundle", "encode", ca.to_str().unwrap()])["bundle"]
        .as_str()
        .unwrap()
        .to_string();
    let out = Command::new(gantry_bin())
        .args(["pool", "list", "--output", "json"])
        .env("GANTRY_URL", &server.url)
        .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
        .env("GANTRY_ADDITIONAL_ROOT_CAS", &bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn api_tokens_are_created_listed_revoked_and_stored_hashed() {
    let server = Server::start();
    let created = server.cli_json(&["token", "create", "ci-script"]);
    let secret = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let as_script = |args: &[&str]| {
        Command::new(gantry_bin())
            .args(args)
            .env("GANTRY_URL", &server.url)
            .env("GANTRY_API_TOKEN", &secret)
            .output()
            .unwrap()
    };
    assert!(as_script(&["pool", "list"]).status.success());
    let listed = server.cli_json(&["token", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        !listed.to_string().contains(&secret),
        "list never shows values"
    );

    server.cli_json(&["token", "revoke", &id]);
    assert_eq!(
        as_script(&["pool", "list"]).status.code(),
        Some(4),
        "revoked at once"
    );

    let admin_id = server.cli_json(&["token", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let last = server.cli(&["token", "revoke", &admin_id]);
    assert_eq!(last.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&last.stderr).contains("last active API token"));

    assert!(
        !server.database_holds(&secret),
        "token in clear in the database"
    );
}

#[test]
fn a_worker_cannot_touch_another_pools_or_another_workers_runs() {
    let server = Server::start();
    let pool_a = server.create_pool("pool-a");
    let pool_b = server.create_pool("pool-b");
    let victim = Launcher::start(&pool_b, &[]);
    victim.wait_registered();
    let run_b = server.submit("pool-b", &["sh", "-c", "echo secret-output; sleep 3"]);
    server.wait_state(&run_b, "APPLYING", Duration::from_secs(10));

    // An intruder registered in pool A (and one in pool B itself).
    for (pool, nonce) in [
        (&pool_a, "intruder-nonce-a-0001"),
        (&pool_b, "intruder-nonce-b-0001"),
    ] {
        let session = register_raw(&server, pool, nonce);
        let http = server.http();
        let url = |path: &str| format!("{}/api/v1/worker{path}", server.url);

        let poll: Value = http
            .post(url("/poll"))
            .bearer_auth(&session)
            .json(&serde_json::json!({"free_slots": 1, "wait_ms": 0}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            poll["leases"].as_array().unwrap().is_empty(),
            "nothing to take"
        );

        let beat: Value = http
            .post(url("/heartbeat"))
            .bearer_auth(&session)
            .json(&serde_json::json!({"runs": [{"run_id": run_b, "lease_id": "guessed"}]}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            beat["instructions"]["abandon"][0],
            run_b.as_str(),
            "a heartbeat cannot renew another's lease"
        );

        let log = http
            .put(url(&format!("/runs/{run_b}/logs/0")))
            .bearer_auth(&session)
            .header("gantry-lease", "guessed")
            .body("forged")
            .send()
            .unwrap();
        assert_eq!(log.status(), 409);
        assert_eq!(log.json::<Value>().unwrap()["error"]["code"], "lease_lost");

        let state = http
            .post(url(&format!("/runs/{run_b}/state")))
            .bearer_auth(&session)
            .json(&serde_json::json!({"lease_id": "guessed", "state": "APPLYING"}))
            .send()
            .unwrap();
        assert_eq!(state.status(), 409);

        let finish = http
            .post(url(&format!("/runs/{run_b}/finish")))
            .bearer_auth(&session)
            .json(&serde_json::json!({"lease_id": "guessed", "outcome": "succeeded", "log_chunks": 0}))
            .send()
            .unwrap();
        assert_eq!(finish.status(), 409);

        // And a worker session is not an API token.
        let read = http
            .get(format!("{}/api/v1/runs/{run_b}/logs", server.url))
            .bearer_auth(&session)
            .send()
            .unwrap();
        assert_eq!(read.status(), 401);
    }
    let run = server.wait_run_end(&run_b, Duration::from_secs(15));
    assert_eq!(
        run["state"], "FINISHED",
        "the victim's run was untouched: {run}"
    );
    assert_eq!(server.logs(&run_b), b"secret-output\n");
}

#[test]
fn masked_values_never_reach_the_log_even_split_across_chunks() {
    let server = Server::start();
    let pool = server.create_pool("masked");
    let secret = "s3cr3t-Value-42";
    let launcher = Launcher::start(
        &pool,
        &[
            ("DEPLOY_KEY", secret),
            ("GANTRY_PASSTHROUGH_ENVS", "DEPLOY_KEY"),
            ("GANTRY_MASK_ENVS", "DEPLOY_KEY"),
        ],
    );
    launcher.wait_registered();
    // Prints the secret whole, then one character every 250 ms: the uploader
    // flushes every 200 ms, so a naive masker would see it in pieces.
    let script = r#"echo "whole: $DEPLOY_KEY"; printf 'slow: '; v="$DEPLOY_KEY"; while [ -n "$v" ]; do rest="${v#?}"; printf '%s' "${v%"$rest"}"; v="$rest"; sleep 0.25; done; echo; echo end"#;
    let id = server.submit("masked", &["sh", "-c", script]);
    assert_eq!(
        server.wait_run_end(&id, Duration::from_secs(30))["state"],
        "FINISHED"
    );
    let log = String::from_utf8(server.logs(&id)).unwrap();
    assert_eq!(log, "whole: ***\nslow: ***\nend\n");
}

/// Tools print secrets JSON-escaped (`terraform show -json`) and base64'd
/// (basic auth headers): those forms are masked too; a secret too short to
/// mask is named in a warning, in the run's log and the launcher's.
#[test]
fn masked_values_in_json_and_base64_and_short_ones_warned() {
    let server = Server::start();
    let pool = server.create_pool("forms");
    let secret = r#"pa"ss\w0rd-<long>"#;
    let launcher = Launcher::start(
        &pool,
        &[
            ("DEPLOY_KEY", secret),
            ("PIN", "42"),
            ("GANTRY_PASSTHROUGH_ENVS", "DEPLOY_KEY"),
            ("GANTRY_MASK_ENVS", "DEPLOY_KEY,PIN"),
        ],
    );
    launcher.wait_registered();
    let json = serde_json::json!({ "key": secret }).to_string();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{secret}"));
    let script = format!("printf '%s\\n' '{json}'; printf '%s' \"$DEPLOY_KEY\" | base64 -w0; echo; echo 'Basic {auth}'");
    let id = server.submit("forms", &["sh", "-c", &script]);
    assert_eq!(
        server.wait_run_end(&id, Duration::from_secs(30))["state"],
        "FINISHED"
    );
    let log = String::from_utf8(server.logs(&id)).unwrap();
    assert!(log.contains("{\"key\":\"***\"}"), "{log}");
    assert!(!log.contains("w0rd"), "{log}");
    assert!(!log.contains(&auth), "{log}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
    assert!(!log.contains(&encoded), "{log}");
    assert!(
        log.contains("the secret PIN is only 2 character(s) long"),
        "{log}"
    );
    assert!(
        launcher.proc.log().contains("the secret PIN is only 2"),
        "{}",
        launcher.proc.log()
    );
}

#[test]
fn no_proxy_decides_which_connections_use_the_proxy() {
    let server = Server::start();
    let pool = server.create_pool("proxied");
    let dead_proxy = format!("http://127.0.0.1:{}", free_port());
    // The control plane is http://127.0.0.1:PORT: HTTP_PROXY applies to it.
    let (code, stderr) = launcher_exit(
        Some(&pool),
        &[
            ("HTTP_PROXY", &dead_proxy),
            ("GANTRY_REGISTER_TIMEOUT", "1s"),
        ],
    );
    assert_eq!(code, 1, "the dead proxy was used: {stderr}");
    for no_proxy in [
        "127.0.0.1",
        "127.0.0.0/8",
        "localhost,127.0.0.1",
        "example.com,127.0.0.1",
    ] {
        let launcher = Launcher::start(
            &pool,
            &[("HTTP_PROXY", &dead_proxy), ("NO_PROXY", no_proxy)],
        );
        launcher.wait_registered();
    }
    let launcher = Launcher::start(
        &pool,
        &[("http_proxy", &dead_proxy), ("no_proxy", "127.0.0.0/8")],
    );
    launcher.wait_registered();
}
