//! Pools from the user's side: keys made locally, tokens, reset, cycle, delete.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn keygen_writes_a_private_key_and_a_csr_the_server_accepts() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let keys = server.cli_json(&["pool", "keygen", "--out-dir", out]);
    let key_path = keys["private_key"].as_str().unwrap();
    let key = std::fs::read_to_string(key_path).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A second keygen refuses to overwrite the key.
    let again = server.cli(&["pool", "keygen", "--out-dir", out]);
    assert_eq!(again.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let csr = format!("{out}/pool.csr");
    let created = server.cli_json(&["pool", "create", "from-keygen", "--csr", &csr]);
    assert!(created["token"].as_str().unwrap().len() > 100);
    assert!(
        !created.to_string().contains("PRIVATE KEY"),
        "the private key never leaves the user"
    );
}

#[test]
fn an_openssl_csr_works_and_the_token_holds_what_the_brief_says() {
    if !require_tool("openssl") {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("openssl")
        .args([
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "pool.key", "-out",
            "pool.csr", "-subj", "/CN=ops",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(status.status.success());
    let created = server.cli_json(&[
        "pool",
        "create",
        "ops",
        "--csr",
        dir.path().join("pool.csr").to_str().unwrap(),
    ]);
    for field in ["id", "name", "token"] {
        assert!(created[field].is_string(), "{field} in {created}");
    }
    let token = gantry_wire::token::PoolToken::decode(created["token"].as_str().unwrap()).unwrap();
    assert_eq!(token.url, server.url);
    assert_eq!(token.pool_id, created["id"].as_str().unwrap());
    assert_eq!(token.server_version, gantry_wire::VERSION);

    // A launcher with the openssl key registers.
    let pool = Pool {
        name: "ops".into(),
        id: token.pool_id.clone(),
        token: created["token"].as_str().unwrap().into(),
        private_key_pem: std::fs::read_to_string(dir.path().join("pool.key")).unwrap(),
    };
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();

    // The server stores the credential's hash, never the credential.
    assert!(
        !server.database_holds(&token.credential),
        "credential in clear in the database"
    );
    assert!(
        !server.database_holds(ADMIN_TOKEN),
        "admin token in clear in the database"
    );
}

#[test]
fn list_show_and_bad_input() {
    let server = Server::start();
    server.create_pool("alpha");
    let pools = server.cli_json(&["pool", "list"]);
    assert_eq!(pools.as_array().unwrap().len(), 1);
    let shown = server.cli_json(&["pool", "show", "alpha"]);
    assert_eq!(shown["name"], "alpha");
    assert_eq!(shown["generation"], 1);

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.csr");
    std::fs::write(&junk, "not a csr").unwrap();
    let out = server.cli(&["pool", "create", "beta", "--csr", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a PEM certificate signing request") && stderr.contains("csr"),
        "{stderr}"
    );

    let good = dir.path().join("good.csr");
    std::fs::write(&good, gantry_pki::generate(2048, "x").unwrap().csr_pem).unwrap();
    let out = server.cli(&[
        "pool",
        "create",
        "Bad Name!",
        "--csr",
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool name \"Bad Name!\" is not valid"));

    let out = server.cli(&["pool", "create", "alpha", "--csr", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let out = server.cli(&["pool", "create", "beta", "--csr", "/nonexistent.csr"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--csr /nonexistent.csr"));

    let out = server.cli(&["pool", "show", "nope"]);
    assert_eq!(out.status.code(), Some(3));

    let out = Command::new(gantry_bin())
        .args(["pool", "list"])
        .env("GANTRY_URL", &server.url)
        .env("GANTRY_API_TOKEN", "wrong-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("API token is not valid"));

    let out = Command::new(gantry_bin())
        .args(["pool", "list"])
        .env("GANTRY_URL", "http://127.0.0.1:9")
        .env("GANTRY_API_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot reach the control plane at http://127.0.0.1:9"));
}

#[test]
fn reset_kills_the_old_token_and_its_workers() {
    let server = Server::start();
    let pool = server.create_pool("resettable");
    let mut launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();

    let dir = tempfile::tempdir().unwrap();
    let generated = gantry_pki::generate(2048, "new").unwrap();
    let csr = dir.path().join("new.csr");
    std::fs::write(&csr, &generated.csr_pem).unwrap();
    let reset = server.cli_json(&[
        "pool",
        "reset",
        "resettable",
        "--csr",
        csr.to_str().unwrap(),
    ]);
    assert_eq!(reset["pool"]["generation"], 2);

    // The running launcher's session dies with the old token: it exits 3.
    let code = launcher.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 3, "{}", launcher.proc.log());

    // The old token cannot register again, even with the right old key.
    let (code, stderr) = launcher_exit(Some(&pool), &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("the pool token is not valid"), "{stderr}");

    // The new token with the new key works.
    let renewed = Pool {
        token: reset["token"].as_str().unwrap().into(),
        private_key_pem: generated.private_key_pem,
        ..pool
    };
    let launcher = Launcher::start(&renewed, &[]);
    launcher.wait_registered();
}

#[test]
fn cycle_makes_workers_finish_and_exit_and_delete_guards_runs() {
    let server = Server::start();
    let pool = server.create_pool("cycled");
    let mut launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let run = server.submit("cycled", &["sh", "-c", "sleep 1; echo done"]);
    server.wait_state(&run, "APPLYING", Duration::from_secs(10));

    server.cli_json(&["pool", "cycle", "cycled"]);
    assert_eq!(
        launcher.proc.wait_exit(Duration::from_secs(15)),
        0,
        "{}",
        launcher.proc.log()
    );
    assert_eq!(
        server.run(&run)["state"],
        "FINISHED",
        "the run in flight finished first"
    );
    assert_eq!(server.logs(&run), b"done\n");

    // A worker registered after the cycle stays.
    let mut fresh = Launcher::start(&pool, &[]);
    fresh.wait_registered();
    std::thread::sleep(Duration::from_millis(500));
    assert!(fresh.proc.is_running());
    drop(fresh);

    let queued = server.submit("cycled", &["true"]);
    let out = server.cli(&["pool", "delete", "cycled"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not yet ended"));
    let out = server.cli(&["pool", "delete", "cycled", "--force"]);
    assert!(out.status.success());
    assert_eq!(server.run(&queued)["state"], "CANCELED");
    assert_eq!(
        server.cli(&["pool", "show", "cycled"]).status.code(),
        Some(3)
    );
}

#[test]
fn a_pool_with_stacks_is_kept_and_a_reset_names_what_its_key_sealed() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let old = gantry_pki::generate(2048, "sealed").unwrap();
    let old_csr = dir.path().join("old.csr");
    std::fs::write(&old_csr, &old.csr_pem).unwrap();
    let old_csr = old_csr.to_str().unwrap();
    server.cli_json(&["pool", "create", "sealed", "--csr", old_csr]);
    let source = dir.path().join("infra");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("main.tf"), "# nothing\n").unwrap();
    server.cli_json(&[
        "stack",
        "create",
        "web",
        "--pool",
        "sealed",
        "--source",
        source.to_str().unwrap(),
        "--secret-env",
        "TF_VAR_token=s3cret",
    ]);

    // Deleting it is a conflict naming the stack, with or without --force.
    for force in [false, true] {
        let mut args = vec!["pool", "delete", "sealed"];
        if force {
            args.push("--force");
        }
        let out = server.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{stderr}");
        assert!(stderr.contains("1 stack(s): web"), "{stderr}");
    }
    server.cli_json(&["pool", "show", "sealed"]);

    // A reset with the same key (a new token only) loses nothing.
    let same = server.cli_json(&["pool", "reset", "sealed", "--csr", old_csr]);
    assert_eq!(same["pool"]["generation"], 2);
    assert!(same.get("stacks_affected").is_none(), "{same}");

    // A new key: refused, naming the stack and its secret, unless --force.
    let new = gantry_pki::generate(2048, "sealed").unwrap();
    let new_csr = dir.path().join("new.csr");
    std::fs::write(&new_csr, &new.csr_pem).unwrap();
    let new_csr = new_csr.to_str().unwrap();
    let out = server.cli(&["pool", "reset", "sealed", "--csr", new_csr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("web (secret variables TF_VAR_token)") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        server.cli_json(&["pool", "show", "sealed"])["generation"],
        2
    );
    let reset = server.cli_json(&["pool", "reset", "sealed", "--csr", new_csr, "--force"]);
    assert_eq!(reset["pool"]["generation"], 3);
    assert_eq!(
        reset["stacks_affected"],
        serde_json::json!([{"name": "web", "secret_env": ["TF_VAR_token"], "runs": []}])
    );
    let out = server.cli(&["pool", "reset", "sealed", "--csr", old_csr, "--force"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("gantry stack update web --secret-env TF_VAR_token="),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
