//! `gantry db copy` end to end: a real control plane on SQLite runs a task,
//! refuses to be copied while it runs, is stopped and copied into a fresh
//! PostgreSQL database; the CLI's JSON report shows every table verified,
//! PostgreSQL holds the run and its log, a second copy is refused, and the
//! database password appears in no output.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::*;

const PASSWORD: &str = "pw-never-printed-7f3a";

/// The test cluster trusts local connections, so the password is accepted
/// and ignored: it is there to show that no output carries it.
fn database_url() -> String {
    gantry_test_postgres::database_url().replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1)
}

fn db_copy(data_dir: &Path, url: &str, json: bool) -> Output {
    let mut command = Command::new(gantry_bin());
    command
        .args(["db", "copy", "--from-data-dir"])
        .arg(data_dir)
        .env("GANTRY_DATABASE_URL", url)
        .env("NO_COLOR", "1");
    if json {
        command.args(["--output", "json"]);
    }
    let output = command.output().expect("run gantry");
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(PASSWORD), "the password was printed: {text}");
    }
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
#[ignore = "needs PostgreSQL (scripts/install-test-deps.sh); scripts/test-all.sh runs it"]
fn a_stopped_sqlite_control_plane_is_copied_into_postgres_and_verified() {
    // The source is SQLite, whatever the engine switch says.
    let mut server = Server::start_sqlite_args(&[]);
    let pool = server.create_pool("moving");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let id = server.submit("moving", &["sh", "-c", "echo hello from sqlite"]);
    let run = server.wait_run_end(&id, Duration::from_secs(30));
    assert_eq!(run["state"], "FINISHED", "{run}");
    let log = server.logs(&id);
    assert_eq!(log, b"hello from sqlite\n");
    let url = database_url();

    // While the server runs, the copy is refused: exit 5, saying what to do.
    let refused = db_copy(&server.data_dir, &url, false);
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("stop `gantry server`"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        gantry_test_postgres::psql(
            &url,
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0",
        "a refused copy touched the target"
    );

    drop(launcher);
    server.proc.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.proc.wait_exit(Duration::from_secs(20)), 0);

    let copied = db_copy(&server.data_dir, &url, true);
    assert!(copied.status.success(), "{}", stderr(&copied));
    let report: Value = serde_json::from_slice(&copied.stdout).unwrap();
    assert_eq!(report["verified"], true, "{report}");
    assert!(
        report["target"].as_str().unwrap().contains("postgres:***@"),
        "{report}"
    );
    let tables = report["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 13, "{report}");
    assert!(tables.iter().all(|t| t["ok"] == true
        && t["source_sha256"] == t["target_sha256"]
        && t["source_rows"] == t["target_rows"]));
    let rows = |name: &str| {
        tables.iter().find(|t| t["table"] == name).unwrap()["target_rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("api_tokens"), 1);
    assert_eq!(rows("pools"), 1);
    assert_eq!(rows("workers"), 1);
    assert_eq!(rows("runs"), 1);
    assert!(rows("run_transitions") >= 4, "{report}");
    assert!(rows("log_chunks") >= 1, "{report}");
    assert_eq!(report["sequences"][0]["column"], "runs.seq");
    assert_eq!(report["sequences"][0]["next_value"], 2);
    // Progress, per table, on stderr.
    let progress = stderr(&copied);
    assert!(progress.contains("copying runs"), "{progress}");
    assert!(progress.contains("verified log_chunks"), "{progress}");

    // PostgreSQL holds the run as it ended, and its log byte for byte.
    assert_eq!(
        gantry_test_postgres::psql(&url, &format!("SELECT state FROM runs WHERE id = '{id}'")),
        "FINISHED"
    );
    let stored = gantry_test_postgres::psql(
        &url,
        &format!("SELECT encode(string_agg(data, ''::bytea ORDER BY seq), 'hex') FROM log_chunks WHERE run_id = '{id}'"),
    );
    assert_eq!(stored, hex::encode(&log));

    // A second copy into the now non-empty database is refused, naming what is there.
    let again = db_copy(&server.data_dir, &url, true);
    assert_eq!(again.status.code(), Some(5), "{}", stderr(&again));
    let error: Value = serde_json::from_str(stderr(&again).lines().last().unwrap()).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("not empty"), "{message}");
    assert!(message.contains("runs holds 1 row(s)"), "{message}");
}

#[test]
fn db_copy_help_teaches_the_move() {
    let output = Command::new(gantry_bin())
        .args(["db", "copy", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "stop `gantry server`",
        "--database-url",
        "GANTRY_DATABASE_URL",
        "same keyring",
        "docs/scaling-out.md",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn db_copy_without_a_database_exits_3_and_a_bad_url_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = db_copy(
        dir.path(),
        "postgres://u:pw-never-printed-7f3a@127.0.0.1:1/d",
        false,
    );
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("gantry.db"),
        "{}",
        stderr(&missing)
    );
    let bad = db_copy(dir.path(), "mysql://u:pw-never-printed-7f3a@h/d", false);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}
