//! Secrets at rest, as an operator lives it: the server's keyring, a
//! database copy holding nothing in clear, a server refusing to start
//! without the key its data is under, and a rotation done while it runs.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

const SECRET: &str = "db-password-7f3a9c";
const STATE_SECRET: &str = "state-held-api-key-19be";

fn gantry(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(gantry_bin())
        .args(args)
        .env_remove("GANTRY_SECRETS_KEY")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `gantry server …`, which must exit (refuse to start) rather than serve.
fn server_refuses(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut child = Command::new(gantry_bin())
        .arg("server")
        .args(args)
        .env_remove("GANTRY_SECRETS_KEY")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gantry server {args:?} started instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn generate_key() -> String {
    let out = gantry(&["secrets-key", "generate", "--output", "json"], &[]);
    assert!(out.status.success());
    let key: Value = serde_json::from_slice(&out.stdout).unwrap();
    key["key"].as_str().unwrap().to_string()
}

fn key_id(key: &str) -> String {
    gantry_pki::at_rest::SecretsKeyring::parse(key)
        .unwrap()
        .current()
        .to_string()
}

fn status(data_dir: &Path, keyring: &Path) -> Value {
    let out = gantry(
        &[
            "secrets-key",
            "status",
            "--output",
            "json",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--secrets-key-file",
            keyring.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The database, its WAL and any other file of the data directory but the keyring.
fn database_holds(data_dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().unwrap() != "secrets.key")
        .any(|p| {
            std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
}

/// A stack with a secret variable and a state version holding a secret.
fn seed(server: &Server) -> String {
    server.create_pool("p");
    let source = server.data_dir.parent().unwrap().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("main.tf"), "").unwrap();
    let stack = server.cli_json(&[
        "stack",
        "create",
        "web",
        "--pool",
        "p",
        "--source",
        source.to_str().unwrap(),
        "--secret-env",
        &format!("DB_PASSWORD={SECRET}"),
    ]);
    let id = stack["id"].as_str().unwrap().to_string();
    let state = serde_json::json!({
        "version": 4, "serial": 1, "lineage": "l-1", "terraform_version": "1.0.3",
        "outputs": {"api_key": {"value": STATE_SECRET, "type": "string", "sensitive": true}},
        "resources": []
    });
    let response = server
        .http()
        .post(format!("{}/api/v1/stacks/{id}/state", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .body(state.to_string())
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());
    id
}

fn state_download(server: &Server) -> String {
    let out = server.cli(&["stack", "state", "download", "web", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_default_keyring_is_generated_owner_only_and_the_database_holds_no_secret() {
    // The generated keyring and the CLI's --data-dir are SQLite's; on
    // PostgreSQL, tests/terraform.rs checks a dump of the database.
    let server = Server::start_sqlite_args(&[]);
    seed(&server);
    let keyring = server.data_dir.join("secrets.key");
    let mode = std::fs::metadata(&keyring).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "secrets.key is mode {mode:o}");
    assert!(state_download(&server).contains(STATE_SECRET));
    let stack = server.cli_json(&["stack", "show", "web"]);
    assert!(!stack.to_string().contains(SECRET));
    for needle in [SECRET, STATE_SECRET, "DB_PASSWORD"] {
        assert!(
            !database_holds(&server.data_dir, needle),
            "{needle:?} is in the data directory in clear"
        );
    }
}

#[test]
fn a_bad_or_missing_key_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["--listen", &listen, "--data-dir", data];
        args.extend(extra);
        server_refuses(&args, env)
    };

    let not_a_key = "not-a-key-but-maybe-a-password";
    let out = server(&[("GANTRY_SECRETS_KEY", not_a_key)], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("GANTRY_SECRETS_KEY: line 1: not base64"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(not_a_key),
        "the value was echoed: {stderr}"
    );

    let short = dir.path().join("short.key");
    std::fs::write(&short, "c2hvcnQ=\n").unwrap();
    let out = server(&[], &["--secrets-key-file", short.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a key is 32 bytes, this one is 5"),
        "{stderr}"
    );

    let key = generate_key();
    let out = server(
        &[("GANTRY_SECRETS_KEY", &key)],
        &["--secrets-key-file", short.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep one"));
}

#[test]
fn rotation_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring");
    let old = generate_key();
    let new = generate_key();
    std::fs::write(&keyring, format!("{old}\n")).unwrap();
    std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
    let flags = ["--secrets-key-file", keyring.to_str().unwrap()];

    let mut server = Server::start_sqlite_args(&flags);
    seed(&server);
    assert!(!server.data_dir.join("secrets.key").exists());
    let before = status(&server.data_dir, &keyring);
    assert_eq!(before["current_key"], key_id(&old));
    assert_eq!(before["keys"][0]["values"], 2, "{before:#}");

    // Started with only the new key, the server refuses, naming the old one.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, format!("{new}\n")).unwrap();
    let out = server_refuses(
        &[
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            server.data_dir.to_str().unwrap(),
            "--secrets-key-file",
            wrong.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&key_id(&old)), "{stderr}");
    assert!(
        !stderr.contains(&old) && !stderr.contains(&new),
        "a key leaked: {stderr}"
    );

    // New key first, old key kept: restart, rotate while serving.
    std::fs::write(&keyring, format!("{new}\n# previous\n{old}\n")).unwrap();
    server.restart();
    let out = gantry(
        &[
            "secrets-key",
            "rotate",
            "--output",
            "json",
            "--data-dir",
            server.data_dir.to_str().unwrap(),
        ],
        &[("GANTRY_SECRETS_KEY_FILE", keyring.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rotated["reencrypted"], 2, "{rotated:#}");
    assert_eq!(rotated["current_key"], key_id(&new));
    let old_key = rotated["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id(&old).as_str())
        .unwrap();
    assert_eq!(old_key["values"], 0);
    // The running server reads the rotated values.
    assert!(state_download(&server).contains(STATE_SECRET));

    // The old key goes; the server still reads everything.
    std::fs::write(&keyring, format!("{new}\n")).unwrap();
    server.restart();
    assert!(state_download(&server).contains(STATE_SECRET));
    let stack = server.cli_json(&["stack", "show", "web"]);
    assert_eq!(stack["secret_env"], serde_json::json!(["DB_PASSWORD"]));
    for needle in [SECRET, STATE_SECRET] {
        assert!(!database_holds(&server.data_dir, needle));
    }
}
