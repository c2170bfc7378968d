//! Stacks with a real Terraform (1.0.3, installed offline by
//! scripts/install-terraform.sh) and the null provider from a local mirror,
//! on the process executor: plan, confirm, apply, state versions, discard,
//! destroy, secrets, git sources. More in stacks_state.rs (stale plans,
//! locks, another pool), stacks_tools.rs (tool versions) and
//! stacks_docker.rs (the Docker executor); shared helpers in tf/.

mod support;
mod tf;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;
use tf::*;

const SECRET: &str = "hunter2-very-secret-value";

#[test]
#[ignore = "slow: terraform"]
fn plan_confirm_apply_discard_destroy_with_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    let source = dir.path().join("infra");
    std::fs::create_dir_all(source.join("stack")).unwrap();
    std::fs::write(source.join("stack/main.tf"), MAIN_TF).unwrap();

    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let launcher = start_launcher(&pool, &env);
    let created = server.cli_json(&[
        "stack",
        "create",
        "web",
        "--pool",
        "tf",
        "--source",
        source.to_str().unwrap(),
        "--project-root",
        "stack",
        "--secret-env",
        &format!("GANTRY_TEST_SECRET={SECRET}"),
        "--hook",
        "before_init=echo hook-before-init",
    ]);
    assert_eq!(
        created["secret_env"],
        serde_json::json!(["GANTRY_TEST_SECRET"])
    );
    assert!(!created.to_string().contains(SECRET));

    // proposed: plan only.
    let id = trigger(&server, "web", "proposed");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(plan(&run), (1, 0, 0));
    let log = String::from_utf8_lossy(&server.logs(&id)).to_string();
    assert!(log.contains("1 to add"), "{log}");
    assert!(log.contains("hook-before-init"), "{log}");
    assert!(versions(&server, "web").is_empty());

    // tracked: waits UNCONFIRMED, confirm applies the saved plan.
    let id = trigger(&server, "web", "tracked");
    let run = server.wait_state(&id, "UNCONFIRMED", LONG);
    assert_eq!(plan(&run), (1, 0, 0));
    server.cli_json(&["run", "confirm", &id]);
    let run = ended(&server, &id, "FINISHED");
    let states: Vec<&str> = run["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "QUEUED",
            "READY",
            "PREPARING",
            "INITIALIZING",
            "PLANNING",
            "UNCONFIRMED",
            "CONFIRMED",
            "APPLYING",
            "FINISHED"
        ]
    );
    let log = String::from_utf8_lossy(&server.logs(&id)).to_string();
    assert!(log.contains("the secret is ***"), "{log}");
    assert!(!log.contains(SECRET), "the secret leaked into the log");
    let outputs = run["outputs"].as_array().unwrap();
    let hidden = outputs.iter().find(|o| o["name"] == "hidden").unwrap();
    assert!(hidden["sensitive"].as_bool().unwrap() && hidden["value"].is_null());
    assert!(!run.to_string().contains("sensitive-output-value"));
    let v = versions(&server, "web");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["version"], 1);
    assert_eq!(v[0]["resources"], 1);
    let out = server.cli(&["stack", "state", "download", "web", "1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("null_resource"));

    // A second plan sees the resource: no changes.
    let id = trigger(&server, "web", "proposed");
    assert_eq!(plan(&ended(&server, &id, "FINISHED")), (0, 0, 0));

    // A changed trigger plans a replace; discarding it leaves the state alone.
    server.cli_json(&["stack", "update", "web", "--env", "TF_VAR_trigger=b"]);
    let id = trigger(&server, "web", "tracked");
    let run = server.wait_state(&id, "UNCONFIRMED", LONG);
    assert_eq!(plan(&run), (1, 0, 1));
    server.cli_json(&["run", "discard", &id]);
    assert_eq!(server.run(&id)["state"], "DISCARDED");
    assert_eq!(versions(&server, "web").len(), 1);

    // destroy waits for confirmation like a tracked run, then empties the state.
    let id = trigger(&server, "web", "destroy");
    let run = server.wait_state(&id, "UNCONFIRMED", LONG);
    assert_eq!(plan(&run), (0, 0, 1));
    assert_eq!(versions(&server, "web").len(), 1, "nothing destroyed yet");
    server.cli_json(&["run", "confirm", &id]);
    ended(&server, &id, "FINISHED");
    let v = versions(&server, "web");
    assert_eq!(v.last().unwrap()["resources"], 0, "{v:?}");

    // The secret variable, and the sensitive output Terraform keeps in its
    // state, are in the database only encrypted.
    for needle in [SECRET, "sensitive-output-value"] {
        assert!(
            !server.database_holds(needle),
            "{needle:?} in the database in clear"
        );
    }
    drop(launcher);
}

/// The states a run went through.
fn transitions(run: &Value) -> Vec<String> {
    run["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_string())
        .collect()
}

/// With auto-apply, tracked and destroy runs apply without a confirmation;
/// off again, they wait.
#[test]
#[ignore = "slow: terraform"]
fn auto_apply_applies_tracked_and_destroy_runs_without_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    let source = module(dir.path());
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _launcher = start_launcher(&pool, &env);
    let created = create_stack(&server, "web", "tf", &source, &["--auto-apply"]);
    assert_eq!(created["auto_apply"], true);
    let shown = server.cli(&["stack", "show", "web"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("auto-apply:   on"));

    let id = trigger(&server, "web", "tracked");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(plan(&run), (1, 0, 0));
    let states = transitions(&run);
    assert!(!states.contains(&"UNCONFIRMED".to_string()), "{states:?}");
    assert_eq!(states[states.len() - 2..], ["APPLYING", "FINISHED"]);
    assert_eq!(versions(&server, "web").last().unwrap()["resources"], 1);

    let id = trigger(&server, "web", "destroy");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(plan(&run), (0, 0, 1));
    assert!(!transitions(&run).contains(&"UNCONFIRMED".to_string()));
    assert_eq!(versions(&server, "web").last().unwrap()["resources"], 0);

    let updated = server.cli_json(&["stack", "update", "web", "--auto-apply=false"]);
    assert_eq!(updated["auto_apply"], false);
    let id = trigger(&server, "web", "tracked");
    server.wait_state(&id, "UNCONFIRMED", LONG);
    server.cli_json(&["run", "discard", &id]);
}

/// A run's state credential works for its own stack, only while it runs.
#[test]
#[ignore = "slow: terraform"]
fn run_credentials_and_serialized_runs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    let source = dir.path().join("infra");
    std::fs::create_dir_all(&source).unwrap();
    // The task records its own credential and whether it works for the other stack.
    std::fs::write(source.join("main.tf"), MAIN_TF).unwrap();
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _a = start_launcher(&pool, &env);
    let _b = start_launcher(&pool, &env);
    for name in ["one", "two"] {
        server.cli_json(&[
            "stack",
            "create",
            name,
            "--pool",
            "tf",
            "--source",
            source.to_str().unwrap(),
        ]);
    }
    let other = server.cli_json(&["stack", "show", "two"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/api/v1/stacks/{other}/state", server.url);
    let creds = dir.path().join("creds");
    let script = format!(
        "echo \"$TF_HTTP_PASSWORD\" > {creds}; curl -s -o /dev/null -w '%{{http_code}}' -u \"x:$TF_HTTP_PASSWORD\" {url} > {creds}.other",
        creds = creds.display()
    );
    let out = server.cli(&[
        "run", "trigger", "one", "--type", "task", "--output", "json", "--", "sh", "-c", &script,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    let task = task["id"].as_str().unwrap().to_string();
    ended(&server, &task, "FINISHED");
    if require_tool("curl") {
        assert_eq!(
            std::fs::read_to_string(format!("{}.other", creds.display())).unwrap(),
            "403"
        );
    }
    let password = std::fs::read_to_string(&creds).unwrap().trim().to_string();
    let one = server.cli_json(&["stack", "show", "one"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let after = server
        .http()
        .get(format!("{}/api/v1/stacks/{one}/state", server.url))
        .basic_auth("x", Some(&password))
        .send()
        .unwrap();
    assert_eq!(
        after.status().as_u16(),
        403,
        "a credential outlived its run"
    );

    // Two tracked runs on one stack: the second waits QUEUED until the first ends.
    let first = trigger(&server, "one", "tracked");
    let second = trigger(&server, "one", "tracked");
    server.wait_state(&first, "UNCONFIRMED", LONG);
    assert_eq!(server.run(&second)["state"], "QUEUED");
    // Runs on another stack are not held up.
    let other_run = trigger(&server, "two", "proposed");
    ended(&server, &other_run, "FINISHED");
    server.cli_json(&["run", "confirm", &first]);
    ended(&server, &first, "FINISHED");
    let run = server.wait_state(&second, "FINISHED", LONG);
    assert_eq!(plan(&run), (0, 0, 0));
}

#[test]
#[ignore = "slow: terraform"]
fn git_source_at_a_pinned_commit() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    if !require_tool("git") {
        return;
    }
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("envs/prod")).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("envs/prod/main.tf"), MAIN_TF).unwrap();
    git(&["add", "."]);
    git(&[
        "-c",
        "user.email=t@t",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "-m",
        "one",
    ]);
    let pinned = git(&["rev-parse", "HEAD"]);
    std::fs::write(repo.join("envs/prod/main.tf"), "this is not terraform").unwrap();
    git(&[
        "-c",
        "user.email=t@t",
        "-c",
        "user.name=t",
        "commit",
        "-qam",
        "two",
    ]);

    // Served by a real git daemon on loopback.
    let port = free_port();
    // Its own process group: `git daemon` forks, and the whole group must go.
    let mut daemon = Command::new("git")
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--informative-errors",
            &format!("--port={port}"),
            "--listen=127.0.0.1",
        ])
        .arg(format!("--base-path={}", dir.path().display()))
        .arg(dir.path())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("git://127.0.0.1:{port}/repo");

    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _launcher = start_launcher(&pool, &env);
    server.cli_json(&[
        "stack",
        "create",
        "g",
        "--pool",
        "tf",
        "--source",
        &url,
        "--ref",
        &pinned,
        "--project-root",
        "envs/prod",
    ]);
    let id = trigger(&server, "g", "proposed");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(run["commit_sha"], pinned.as_str());
    assert_eq!(plan(&run), (1, 0, 0));

    // A bad ref fails in PREPARING, saying so.
    server.cli_json(&["stack", "update", "g", "--ref", "no-such-branch"]);
    let id = trigger(&server, "g", "proposed");
    let run = ended(&server, &id, "FAILED");
    assert!(
        run["reason"].as_str().unwrap().contains("no-such-branch"),
        "{run:#}"
    );
    let group = nix::unistd::Pid::from_raw(daemon.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = daemon.wait();
}

/// A plan that only changes outputs (a stack's first output, then a new
/// value) waits for confirmation and, confirmed, puts them in the state.
#[test]
#[ignore = "slow: terraform"]
fn a_plan_that_only_changes_outputs_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    let source = dir.path().join("outputs");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(
        source.join("main.tf"),
        "variable \"greeting\" {\n  default = \"hello\"\n}\noutput \"greeting\" {\n  value = var.greeting\n}\n",
    )
    .unwrap();
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _launcher = start_launcher(&pool, &env);
    create_stack(&server, "out", "tf", &source, &[]);

    let id = trigger(&server, "out", "tracked");
    let run = server.wait_state(&id, "UNCONFIRMED", LONG);
    assert_eq!(run["plan"]["outputs"], 1, "{run:#}");
    server.cli_json(&["run", "confirm", &id]);
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(run["outputs"][0]["name"], "greeting", "{run:#}");
    assert_eq!(run["outputs"][0]["value"], "hello");
    assert_eq!(versions(&server, "out").len(), 1);

    // Nothing changed: nothing to confirm.
    let id = trigger(&server, "out", "tracked");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(run["plan"]["outputs"], 0, "{run:#}");
    assert!(log_text(&server, &id).contains("nothing to confirm"));

    // A new value is a change again.
    server.cli_json(&["stack", "update", "out", "--env", "TF_VAR_greeting=bye"]);
    let id = trigger(&server, "out", "tracked");
    server.wait_state(&id, "UNCONFIRMED", LONG);
    server.cli_json(&["run", "confirm", &id]);
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(run["outputs"][0]["value"], "bye", "{run:#}");
    assert_eq!(versions(&server, "out").len(), 2);
}

/// A control plane on HTTPS with a private CA, and a launcher given its
/// bundle (GANTRY_ADDITIONAL_ROOT_CAS): Terraform in the run trusts it too,
/// so `init` against the https state backend, plan and apply work; every
/// tool the run spawns is pointed at the same CA file.
#[test]
#[ignore = "slow: terraform"]
fn terraform_in_a_run_trusts_gantry_additional_root_cas() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut env) = tools(dir.path()) else {
        return;
    };
    let source = module(dir.path());
    let server = Server::start_with_args("10s", &["--tls-dev"]);
    assert!(server.url.starts_with("https://"));
    let bundle = server.dev_ca_bundle().unwrap();
    env.push(("GANTRY_ADDITIONAL_ROOT_CAS".into(), bundle));
    let pool = server.create_pool("tls");
    let _launcher = start_launcher(&pool, &env);
    let check = r#"test -s "$SSL_CERT_FILE" && test "$GIT_SSL_CAINFO" = "$SSL_CERT_FILE" && echo "ca file: $SSL_CERT_FILE""#;
    create_stack(
        &server,
        "tls",
        "tls",
        &source,
        &["--hook", &format!("before_init={check}")],
    );

    let id = trigger(&server, "tls", "tracked");
    let run = server.wait_state(&id, "UNCONFIRMED", LONG);
    let log = log_text(&server, &id);
    assert!(!log.contains("x509"), "{log}");
    assert!(log.contains("ca-certificates.pem"), "{log}");
    assert_eq!(plan(&run), (1, 0, 0));
    server.cli_json(&["run", "confirm", &id]);
    ended(&server, &id, "FINISHED");
    assert_eq!(versions(&server, "tls").len(), 1);
}
