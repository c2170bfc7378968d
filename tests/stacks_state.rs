//! A stack's state with a real Terraform: a saved plan that went stale is
//! not applied, the state lock turns other lockers (and Terraform) away
//! until it is unlocked, and a worker of another pool reads neither the
//! stored workspace nor the state.

mod support;
mod tf;

use serde_json::Value;
use support::*;
use tf::*;

/// GET the stack's current state with the admin token.
fn current_state(server: &Server, stack: &str) -> Value {
    let response = server
        .http()
        .get(state_url(server, stack))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

/// Writes a new state version as an admin would (Terraform's http backend
/// POST, unlocked): the current state with its serial bumped.
fn admin_writes_state(server: &Server, stack: &str) -> Value {
    let mut state = current_state(server, stack);
    state["serial"] = (state["serial"].as_i64().unwrap() + 1).into();
    let response = server
        .http()
        .post(state_url(server, stack))
        .bearer_auth(ADMIN_TOKEN)
        .json(&state)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    state
}

#[test]
#[ignore = "slow: terraform"]
fn a_stale_plan_fails_clearly_and_leaves_the_state_alone() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    let source = module(dir.path());
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _launcher = start_launcher(&pool, &env);
    create_stack(&server, "web", "tf", &source, &[]);
    apply(&server, "web");
    assert_eq!(versions(&server, "web").len(), 1);

    // A replace waits for confirmation; meanwhile an admin writes the state.
    server.cli_json(&["stack", "update", "web", "--env", "TF_VAR_trigger=b"]);
    let id = trigger(&server, "web", "tracked");
    assert_eq!(
        plan(&server.wait_state(&id, "UNCONFIRMED", LONG)),
        (1, 0, 1)
    );
    let written = admin_writes_state(&server, "web");
    server.cli_json(&["run", "confirm", &id]);
    let run = ended(&server, &id, "FAILED");
    let why = reason(&run);
    assert!(
        why.contains("the saved plan is stale")
            && why.contains("state changed since the plan")
            && why.contains(&format!("the state is now serial {}", written["serial"])),
        "{why}"
    );
    assert_eq!(states(&run).last().unwrap(), "FAILED");
    assert!(states(&run).contains(&"APPLYING".to_string()));
    let log = log_text(&server, &id);
    assert!(!log.contains("Apply complete"), "{log}");
    assert_eq!(versions(&server, "web").len(), 2, "the run wrote no state");
    assert_eq!(current_state(&server, "web"), written);

    // The state changes after the launcher's check, right before `apply`
    // (a before_apply hook writes it): Terraform refuses, and says why.
    let id = trigger(&server, "web", "tracked");
    assert_eq!(
        plan(&server.wait_state(&id, "UNCONFIRMED", LONG)),
        (1, 0, 1)
    );
    let mut next = current_state(&server, "web");
    next["serial"] = (next["serial"].as_i64().unwrap() + 1).into();
    let next_file = dir.path().join("next.tfstate");
    std::fs::write(&next_file, serde_json::to_vec(&next).unwrap()).unwrap();
    let hook = format!(
        "before_apply=curl -sf -X POST -H 'Authorization: Bearer {ADMIN_TOKEN}' --data-binary @{} {}",
        next_file.display(),
        state_url(&server, "web")
    );
    server.cli_json(&["stack", "update", "web", "--hook", &hook]);
    server.cli_json(&["run", "confirm", &id]);
    let run = ended(&server, &id, "FAILED");
    let why = reason(&run);
    assert!(
        why.contains("apply failed: the saved plan is stale") && why.contains("Terraform refused"),
        "{why}\n{}",
        log_text(&server, &id)
    );
    assert!(log_text(&server, &id).contains("Saved plan is stale"));
    assert_eq!(versions(&server, "web").len(), 3, "only the hook wrote");
    assert_eq!(current_state(&server, "web"), next);
}

/// LOCK with the admin token; returns (status, body).
fn lock(server: &Server, stack: &str, id: &str) -> (u16, String) {
    let response = server
        .http()
        .request(
            reqwest::Method::from_bytes(b"LOCK").unwrap(),
            state_url(server, stack),
        )
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"ID": id, "Operation": "test", "Who": "second-locker"}))
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

#[test]
#[ignore = "slow: terraform"]
fn the_state_lock_turns_lockers_and_terraform_away_until_unlocked() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    if !require_tool("curl") {
        return;
    }
    let source = module(dir.path());
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _launcher = start_launcher(&pool, &env);
    create_stack(&server, "web", "tf", &source, &[]);

    // A run holds the lock (a task takes it with its own credential and
    // waits for a file): a second locker gets 423 and the holder's info.
    let held = dir.path().join("held");
    let release = dir.path().join("release");
    let script = format!(
        "curl -sf -X LOCK -u \"run:$TF_HTTP_PASSWORD\" -d '{{\"ID\":\"run-lock-1\",\"Who\":\"the task\",\"Operation\":\"OperationTypeApply\"}}' {url} \
         && touch {held} && while [ ! -e {release} ]; do sleep 0.05; done",
        url = state_url(&server, "web"),
        held = held.display(),
        release = release.display()
    );
    let out = server.cli(&[
        "run", "trigger", "web", "--type", "task", "--output", "json", "--", "sh", "-c", &script,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    let task = task["id"].as_str().unwrap().to_string();
    wait_for("the task to hold the lock", LONG, || {
        held.exists().then_some(())
    });
    let (status, body) = lock(&server, "web", "second-1");
    assert_eq!(status, 423, "{body}");
    let holder: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(holder["ID"], "run-lock-1");
    assert_eq!(holder["Who"], "the task");
    // The run ends without unlocking: its lock goes with it.
    std::fs::write(&release, "").unwrap();
    ended(&server, &task, "FINISHED");
    let (status, body) = lock(&server, "web", "second-2");
    assert_eq!(status, 200, "the ended run's lock was dropped: {body}");
    let out = server.cli(&["stack", "state", "unlock", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An admin lock: a second locker gets 423 with the admin's info ...
    let info = server.cli_json(&["stack", "state", "lock", "web", "--reason", "maintenance"]);
    let admin_id = info["ID"].as_str().unwrap().to_string();
    let (status, body) = lock(&server, "web", "second-3");
    assert_eq!(status, 423, "{body}");
    let holder: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(holder["ID"], admin_id.as_str());
    assert_eq!(holder["Info"], "maintenance");
    let again = server.cli(&["stack", "state", "lock", "web"]);
    assert_eq!(
        again.status.code(),
        Some(5),
        "a second `state lock` is a conflict"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains(&admin_id));

    // ... and Terraform fails to lock it, with a reason naming the holder.
    // (A proposed run plans without the lock: see the test below.)
    let id = trigger(&server, "web", "tracked");
    let run = ended(&server, &id, "FAILED");
    let why = reason(&run);
    assert!(
        why.contains("plan failed: the stack's state is locked")
            && why.contains(&format!("lock ID {admin_id}")),
        "{why}\n{}",
        log_text(&server, &id)
    );
    assert!(log_text(&server, &id).contains("Error acquiring the state lock"));

    // Terraform 1.0's http backend does not retry a held lock (so
    // -lock-timeout cannot make it wait): the run failed at once. Unlocking
    // lets the next run through.
    let out = server.cli(&["stack", "state", "unlock", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = trigger(&server, "web", "proposed");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(plan(&run), (1, 0, 0));
    assert!(versions(&server, "web").is_empty(), "plans write no state");
}

/// A proposed run's credential reads the state and nothing else, and its
/// plan needs no lock: it plans while a user holds the lock, and cannot
/// release that lock even knowing its ID.
#[test]
#[ignore = "slow: terraform"]
fn a_proposed_run_reads_the_state_only_and_plans_without_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    if !require_tool("curl") {
        return;
    }
    let source = module(dir.path());
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _launcher = start_launcher(&pool, &env);
    create_stack(&server, "web", "tf", &source, &[]);
    apply(&server, "web");
    let info = server.cli_json(&["stack", "state", "lock", "web", "--reason", "maintenance"]);
    let admin_id = info["ID"].as_str().unwrap().to_string();

    // Before its plan, the run tries every method with its own credential,
    // the admin's lock ID in the body.
    let codes = dir.path().join("codes");
    let hook = format!(
        "for m in GET POST LOCK UNLOCK; do curl -s -o /dev/null -w \"$m=%{{http_code}} \" -X $m -u \"run:$TF_HTTP_PASSWORD\" \
         -d '{{\"ID\":\"{admin_id}\",\"serial\":99,\"lineage\":\"x\"}}' {url} >> {codes}; done",
        url = state_url(&server, "web"),
        codes = codes.display()
    );
    server.cli_json(&[
        "stack",
        "update",
        "web",
        "--hook",
        &format!("before_plan={hook}"),
    ]);
    let id = trigger(&server, "web", "proposed");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(plan(&run), (0, 0, 0));
    assert_eq!(
        std::fs::read_to_string(&codes).unwrap().trim(),
        "GET=200 POST=403 LOCK=403 UNLOCK=403"
    );
    // The admin's lock is still there, and the state unchanged.
    let (status, body) = lock(&server, "web", "second");
    assert_eq!(status, 423, "{body}");
    assert!(body.contains(&admin_id), "{body}");
    assert_eq!(versions(&server, "web").len(), 1);
}

#[test]
#[ignore = "slow: terraform"]
fn a_worker_of_another_pool_cannot_read_the_workspace_or_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tools(dir.path()) else { return };
    let source = module(dir.path());
    let server = Server::start_with("10s");
    let pool_a = server.create_pool("pool-a");
    let pool_b = server.create_pool("pool-b");
    let launcher = start_launcher(&pool_a, &env);
    let stack = create_stack(&server, "web", "pool-a", &source, &[]);
    let stack_id = stack["id"].as_str().unwrap().to_string();
    apply(&server, "web");
    let lineage = current_state(&server, "web")["lineage"]
        .as_str()
        .unwrap()
        .to_string();

    // A tracked run waits with its workspace stored; its worker goes away.
    server.cli_json(&["stack", "update", "web", "--env", "TF_VAR_trigger=b"]);
    let id = trigger(&server, "web", "tracked");
    server.wait_state(&id, "UNCONFIRMED", LONG);
    drop(launcher);

    let session = register_raw(&server, &pool_b, "intruder-nonce-stacks-0001");
    let http = server.http();
    let worker = |path: &str| format!("{}/api/v1/worker/runs/{id}/{path}", server.url);
    let leaked = |body: &str| {
        body.contains("GNTRYENV1") || body.contains(&lineage) || body.contains("null_resource")
    };
    for path in ["workspace", "source"] {
        let response = http
            .get(worker(path))
            .bearer_auth(&session)
            .header("gantry-lease", "guessed")
            .send()
            .unwrap();
        assert_eq!(response.status(), 409, "{path}");
        let body = response.text().unwrap();
        assert!(
            body.contains("lease_lost") && !leaked(&body),
            "{path}: {body}"
        );
    }

    // The state backend: the worker's session is no credential, as bearer or basic.
    let address = state_url(&server, &stack_id);
    for method in ["GET", "LOCK", "POST"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for basic in [false, true] {
            let request = http
                .request(method.clone(), &address)
                .body(r#"{"ID":"intruder","serial":99,"lineage":"x"}"#);
            let request = if basic {
                request.basic_auth("worker", Some(&session))
            } else {
                request.bearer_auth(&session)
            };
            let response = request.send().unwrap();
            assert_eq!(response.status(), 403, "{method} (basic: {basic})");
            assert!(!leaked(&response.text().unwrap()));
        }
    }
    for path in ["state/versions", "state/versions/1"] {
        let response = http
            .get(format!("{}/api/v1/stacks/{stack_id}/{path}", server.url))
            .bearer_auth(&session)
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert!(!leaked(&response.text().unwrap()));
    }
    // The same reads with the admin token do see the state (the checks above can fail).
    assert!(leaked(
        &serde_json::to_string(&current_state(&server, "web")).unwrap()
    ));
    assert_eq!(
        versions(&server, "web").len(),
        1,
        "the intruder wrote nothing"
    );

    // Confirmed, the run waits for pool A: pool B's worker is not offered it.
    server.cli_json(&["run", "confirm", &id]);
    let poll: Value = http
        .post(format!("{}/api/v1/worker/poll", server.url))
        .bearer_auth(&session)
        .json(&serde_json::json!({"free_slots": 1, "wait_ms": 0}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(poll["leases"].as_array().unwrap().is_empty(), "{poll}");
    assert_eq!(server.run(&id)["state"], "CONFIRMED");
    let response = http
        .get(worker("workspace"))
        .bearer_auth(&session)
        .header("gantry-lease", "guessed")
        .send()
        .unwrap();
    assert_eq!(response.status(), 409);

    // A worker of pool A applies it.
    let _a = start_launcher(&pool_a, &env);
    let run = ended(&server, &id, "FINISHED");
    assert_ne!(run["worker_id"].as_str(), None);
    assert_eq!(versions(&server, "web").len(), 2);
}
