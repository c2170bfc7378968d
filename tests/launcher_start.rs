//! The launcher refuses bad configuration at start, naming the variable.

mod support;

use base64::Engine;
use support::*;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn missing_and_malformed_credentials_are_named() {
    let (code, stderr) = launcher_exit(None, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("GANTRY_TOKEN: not set"), "{stderr}");

    let (code, stderr) = launcher_exit(None, &[("GANTRY_TOKEN", "%%% not base64")]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("GANTRY_TOKEN: the token is not valid base64"),
        "{stderr}"
    );

    let (code, stderr) = launcher_exit(None, &[("GANTRY_TOKEN", &b64("{\"hello\": 1}"))]);
    assert_eq!(code, 2);
    assert!(
        stderr
            .contains("GANTRY_TOKEN: the token decodes from base64 but is not a Gantry pool token"),
        "{stderr}"
    );

    let server = Server::start();
    let pool = server.create_pool("creds");
    let token = pool.token.as_str();

    let (code, stderr) = launcher_exit(None, &[("GANTRY_TOKEN", token)]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("GANTRY_POOL_PRIVATE_KEY: not set"),
        "{stderr}"
    );

    let (code, stderr) = launcher_exit(
        None,
        &[
            ("GANTRY_TOKEN", token),
            ("GANTRY_POOL_PRIVATE_KEY", "@@not-base64@@"),
        ],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("GANTRY_POOL_PRIVATE_KEY: not valid base64"),
        "{stderr}"
    );

    let (code, stderr) = launcher_exit(
        None,
        &[
            ("GANTRY_TOKEN", token),
            ("GANTRY_POOL_PRIVATE_KEY", &b64("just text")),
        ],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("GANTRY_POOL_PRIVATE_KEY: not a PEM private key"),
        "{stderr}"
    );

    let other = gantry_pki::generate(2048, "other").unwrap();
    let (code, stderr) = launcher_exit(
        None,
        &[
            ("GANTRY_TOKEN", token),
            ("GANTRY_POOL_PRIVATE_KEY", &b64(&other.private_key_pem)),
        ],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("GANTRY_POOL_PRIVATE_KEY: this key does not match the pool"),
        "{stderr}"
    );

    // A file works as well as the variable.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("pool.key");
    std::fs::write(&key_file, &pool.private_key_pem).unwrap();
    let mut command = std::process::Command::new(launcher_bin());
    command
        .env_clear()
        .env("GANTRY_TOKEN", token)
        .env("GANTRY_WORK_DIR", dir.path().join("w"))
        .env("GANTRY_EXECUTOR", "process")
        .arg("--private-key-file")
        .arg(&key_file)
        .arg("--run-timeout")
        .arg("ten minutes");
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("GANTRY_RUN_TIMEOUT"),
        "invalid value names the variable"
    );
}

#[test]
fn bad_settings_are_named() {
    let server = Server::start();
    let pool = server.create_pool("settings");
    for (variable, value, expected) in [
        (
            "GANTRY_MAX_CONCURRENT_RUNS",
            "0",
            "GANTRY_MAX_CONCURRENT_RUNS",
        ),
        ("GANTRY_LOGS_TIMEOUT", "soon", "GANTRY_LOGS_TIMEOUT"),
        ("GANTRY_EXECUTOR", "kubernetes", "GANTRY_EXECUTOR"),
        (
            "GANTRY_WORKER_EXTRA_MOUNTS",
            "relative:/x",
            "GANTRY_WORKER_EXTRA_MOUNTS",
        ),
        (
            "GANTRY_ADDITIONAL_ROOT_CAS",
            "%%%",
            "GANTRY_ADDITIONAL_ROOT_CAS: not valid base64",
        ),
        (
            "GANTRY_ADDITIONAL_ROOT_CAS",
            &b64("[]"),
            "GANTRY_ADDITIONAL_ROOT_CAS: the base64 decodes, but not to the JSON object",
        ),
        (
            "GANTRY_ADDITIONAL_ROOT_CAS",
            &b64(&format!(
                "{{\"caCertificates\": [\"{}\"]}}",
                b64("no cert here")
            )),
            "caCertificates[0] does not hold a PEM certificate",
        ),
    ] {
        let (code, stderr) = launcher_exit(Some(&pool), &[(variable, value)]);
        assert_eq!(code, 2, "{variable}={value}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{variable}={value}: expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn an_unreachable_control_plane_is_reported_with_its_url() {
    let server = Server::start();
    let pool = server.create_pool("gone");
    drop(server);
    let (code, stderr) = launcher_exit(Some(&pool), &[("GANTRY_REGISTER_TIMEOUT", "1s")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach the control plane at http://127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn two_launchers_cannot_share_a_work_directory() {
    let server = Server::start();
    let pool = server.create_pool("shared-dir");
    let first = Launcher::start(&pool, &[]);
    first.wait_registered();
    let output = Launcher::command(&pool, &first.work_dir).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is in use by another launcher"));
}

#[test]
fn help_lists_every_variable() {
    let output = std::process::Command::new(launcher_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "GANTRY_TOKEN",
        "GANTRY_POOL_PRIVATE_KEY",
        "GANTRY_ADDITIONAL_ROOT_CAS",
        "GANTRY_EXECUTOR",
        "GANTRY_DEFAULT_RUNNER_IMAGE",
        "GANTRY_WORKER_EXTRA_MOUNTS",
        "GANTRY_WORKER_NETWORK",
        "GANTRY_WORKER_RUNTIME",
        "GANTRY_DOCKER_CONFIG_DIR",
        "GANTRY_PASSTHROUGH_ENVS",
        "GANTRY_MASK_ENVS",
        "GANTRY_RUN_TIMEOUT",
        "GANTRY_LOGS_TIMEOUT",
        "GANTRY_MAX_CONCURRENT_RUNS",
        "GANTRY_METADATA_",
        "HTTPS_PROXY",
    ] {
        assert!(
            help.contains(variable),
            "--help does not mention {variable}"
        );
    }
}
