//! A pool reset to a new key, seen from its stacks, with a real Terraform:
//! the reset names what was sealed to the old key, discards the plan no
//! worker can open any more, and the stack runs again once its secrets are
//! set again, as docs/deploying-worker-pools.md says.

mod support;
mod tf;

use support::*;
use tf::*;

#[test]
#[ignore = "slow: terraform"]
fn a_reset_discards_unopenable_plans_and_secrets_are_set_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    let source = module(dir.path());
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let launcher = start_launcher(&pool, &env);
    create_stack(
        &server,
        "web",
        "tf",
        &source,
        &["--secret-env", "GANTRY_TEST_SECRET=old-secret-value"],
    );
    let waiting = trigger(&server, "web", "tracked");
    server.wait_state(&waiting, "UNCONFIRMED", LONG);
    drop(launcher);

    let new = gantry_pki::generate(2048, "tf").unwrap();
    let csr = dir.path().join("new.csr");
    std::fs::write(&csr, &new.csr_pem).unwrap();
    let csr = csr.to_str().unwrap();
    let out = server.cli(&["pool", "reset", "tf", "--csr", csr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(
            "web (secret variables GANTRY_TEST_SECRET; plans waiting to be applied in runs"
        ) && stderr.contains(&waiting),
        "{stderr}"
    );
    assert_eq!(server.run(&waiting)["state"], "UNCONFIRMED");

    let reset = server.cli_json(&["pool", "reset", "tf", "--csr", csr, "--force"]);
    assert_eq!(reset["runs_discarded"], serde_json::json!([waiting]));
    let run = server.run(&waiting);
    assert_eq!(run["state"], "DISCARDED");
    assert!(
        reason(&run).contains("sealed to the old one"),
        "{}",
        reason(&run)
    );

    // A worker with the new key cannot open the old secret: the run says so.
    let renewed = Pool {
        token: reset["token"].as_str().unwrap().into(),
        private_key_pem: new.private_key_pem,
        ..pool
    };
    let _launcher = start_launcher(&renewed, &env);
    let id = trigger(&server, "web", "tracked");
    let run = ended(&server, &id, "FAILED");
    assert!(
        reason(&run).contains("GANTRY_TEST_SECRET") && reason(&run).contains("cannot decrypt"),
        "{}",
        reason(&run)
    );

    // Set again, as the docs say, the stack plans and applies.
    server.cli_json(&[
        "stack",
        "update",
        "web",
        "--secret-env",
        "GANTRY_TEST_SECRET=new-secret-value",
    ]);
    let id = trigger(&server, "web", "tracked");
    server.wait_state(&id, "UNCONFIRMED", LONG);
    server.cli_json(&["run", "confirm", &id]);
    ended(&server, &id, "FINISHED");
    assert!(log_text(&server, &id).contains("the secret is ***"));
}
