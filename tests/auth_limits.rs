//! The failed-authentication limit: counted per client (the peer, or what a
//! trusted proxy forwards), logged without the credential, never in the way
//! of a valid credential; the state backend's refusals count too, and it
//! gives nothing away about which stacks exist.

mod support;

use std::process::Command;

use support::*;

fn get_pools(server: &Server, token: &str, forwarded_for: Option<&str>) -> u16 {
    let mut request = server
        .http()
        .get(format!("{}/api/v1/pools", server.url))
        .bearer_auth(token);
    if let Some(client) = forwarded_for {
        request = request.header("X-Forwarded-For", client);
    }
    request.send().unwrap().status().as_u16()
}

#[test]
fn a_limited_address_still_gets_in_with_a_valid_credential() {
    let server = Server::start();
    let statuses: Vec<u16> = (0..40)
        .map(|i| get_pools(&server, &format!("wrong-token-{i:04}"), None))
        .collect();
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[30..].iter().all(|s| *s == 429), "{statuses:?}");
    // The admin behind the same address is not locked out, and a worker
    // behind it registers and runs.
    assert_eq!(get_pools(&server, ADMIN_TOKEN, None), 200);
    let pool = server.create_pool("shared-address");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let id = server.submit("shared-address", &["true"]);
    assert_eq!(
        server.wait_run_end(&id, std::time::Duration::from_secs(20))["state"],
        "FINISHED"
    );
    assert_eq!(get_pools(&server, "wrong-token-again", None), 429);
    let log = server.proc.log();
    assert!(log.contains("authentication failed"));
    assert!(
        !log.contains("wrong-token-"),
        "the credential is never logged"
    );
}

#[test]
fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    // Without --trusted-proxies the header is the client's own claim: a
    // client cannot dodge the limit by writing a new address every time.
    let server = Server::start();
    for i in 0..30 {
        let spoofed = format!("198.51.100.{i}");
        assert_eq!(get_pools(&server, "wrong", Some(&spoofed)), 401);
    }
    assert_eq!(get_pools(&server, "wrong", Some("203.0.113.1")), 429);

    // Behind a trusted proxy (here the test itself, on 127.0.0.1), each
    // forwarded client is counted on its own.
    let server = Server::start_args(&["--trusted-proxies", "10.0.0.0/8,127.0.0.1"]);
    for _ in 0..30 {
        assert_eq!(get_pools(&server, "wrong", Some("198.51.100.1")), 401);
    }
    assert_eq!(get_pools(&server, "wrong", Some("198.51.100.1")), 429);
    // A client-written entry left of the proxy's is not who is counted.
    assert_eq!(
        get_pools(&server, "wrong", Some("198.51.100.2, 198.51.100.1")),
        429
    );
    assert_eq!(get_pools(&server, "wrong", Some("198.51.100.2")), 401);
    assert_eq!(get_pools(&server, "wrong", None), 401);
    assert_eq!(get_pools(&server, ADMIN_TOKEN, Some("198.51.100.1")), 200);
    assert!(server.proc.log().contains("198.51.100.1"));
}

#[test]
fn a_bad_trusted_proxies_value_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(gantry_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("GANTRY_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--trusted-proxies") && stderr.contains("proxy.internal"),
        "{stderr}"
    );
}

#[test]
fn the_state_backend_checks_the_credential_first_and_its_refusals_count() {
    let server = Server::start();
    server.create_pool("p");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.tf"), "# nothing\n").unwrap();
    server.cli_json(&[
        "stack",
        "create",
        "web",
        "--pool",
        "p",
        "--source",
        dir.path().to_str().unwrap(),
    ]);
    let http = server.http();
    let state = |stack: &str, password: &str| {
        let response = http
            .get(format!("{}/api/v1/stacks/{stack}/state", server.url))
            .basic_auth("run", Some(password))
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    // A stack that exists and one that does not look the same to a bad credential.
    let (status, existing) = state("web", "gantry_run_guessed");
    assert_eq!(status, 403, "{existing}");
    let (status, missing) = state("no-such-stack", "gantry_run_guessed");
    assert_eq!(status, 403, "{missing}");
    assert_eq!(existing, missing);
    // A valid token sees the difference.
    assert_eq!(state("web", ADMIN_TOKEN).0, 204);
    assert_eq!(state("no-such-stack", ADMIN_TOKEN).0, 404);

    // The 403s are failed authentications: the limit applies to them.
    let statuses: Vec<u16> = (0..30)
        .map(|i| state("web", &format!("gantry_run_guess_{i}")).0)
        .collect();
    assert_eq!(statuses[..28], [403; 28], "{statuses:?}");
    assert_eq!(statuses[28..], [429, 429], "{statuses:?}");
    assert_eq!(state("web", ADMIN_TOKEN).0, 204);
}
