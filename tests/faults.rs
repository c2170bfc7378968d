//! The fault suite: an apply is sacred. Each scenario runs a tracked apply
//! whose `local-exec` takes several lease periods, breaks something while
//! it runs, and asserts that the apply ran exactly once (a marker file),
//! that the run ends FINISHED (or in the documented recovery state), that
//! the state is stored (the next plan has no changes), and that the log
//! holds the apply once.
//!
//! Leases are 2 s, so an outage of a few seconds is several lease periods:
//! slow scenarios are scaled by the lease, not by real minutes.

mod faults_common;
mod support;
mod tf;

use std::time::{Duration, Instant};

use faults_common::*;
use nix::sys::signal::Signal;
use support::Launcher;
use tf::*;

fn control_plane_killed_during_an_apply(down: Duration) {
    let Some(mut s) = Scenario::new(8) else {
        return;
    };
    let id = s.start_apply();
    s.server.restart_after(down);
    let run = ended(&s.server, &id, "FINISHED");
    assert!(
        !states(&run).contains(&"LOST".to_string()),
        "a control-plane outage never loses a run whose worker is alive: {run:#}"
    );
    s.assert_applied_once(&id);
}

#[test]
#[ignore = "slow: terraform, faults"]
fn control_plane_killed_for_5s_during_an_apply_finishes_it_once() {
    control_plane_killed_during_an_apply(Duration::from_secs(5));
}

/// Longer than Terraform's own state-save retries may cover: whatever
/// Terraform could not save, the launcher hands over when it is back.
#[test]
#[ignore = "slow: terraform, faults"]
fn control_plane_killed_for_20s_during_an_apply_finishes_it_once() {
    control_plane_killed_during_an_apply(Duration::from_secs(20));
}

#[test]
#[ignore = "slow: terraform, faults"]
fn control_plane_frozen_during_an_apply_finishes_it_once() {
    let Some(s) = Scenario::new(6) else { return };
    let id = s.start_apply();
    s.server.proc.signal(Signal::SIGSTOP);
    // Five lease periods frozen: the reaper must notice its own pause.
    std::thread::sleep(Duration::from_secs(10));
    s.server.proc.signal(Signal::SIGCONT);
    let run = ended(&s.server, &id, "FINISHED");
    assert!(!states(&run).contains(&"LOST".to_string()), "{run:#}");
    s.assert_applied_once(&id);
}

#[test]
#[ignore = "slow: terraform, faults"]
fn a_launcher_killed_during_an_apply_leaves_the_run_lost_and_the_stack_locked_until_an_operator_gives_up(
) {
    let Some(mut s) = Scenario::new(8) else {
        return;
    };
    let id = s.start_apply();
    s.launcher.proc.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let run = s.server.wait_state(&id, "LOST", Duration::from_secs(30));
    assert!(
        killed.elapsed() <= Duration::from_secs(6),
        "LOST {:?} after the kill, with a 2 s lease",
        killed.elapsed()
    );
    assert!(reason(&run).contains("--force"), "{run:#}");

    // Nothing else may plan or apply on the stack meanwhile.
    let waiting = trigger(&s.server, "web", "proposed");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.server.run(&waiting)["state"], "QUEUED");

    // Unlocking without --force says what is at stake and refuses.
    let refused = s.server.cli(&["stack", "state", "unlock", "web"]);
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("LOST") && said.contains("--force"), "{said}");
    assert_eq!(s.server.run(&id)["state"], "LOST");

    s.server
        .cli_json(&["stack", "state", "unlock", "web", "--force"]);
    let given_up = ended(&s.server, &id, "FAILED");
    assert!(
        reason(&given_up).contains("operator gave up"),
        "{given_up:#}"
    );
    // The stack is free: the waiting plan runs, on a new launcher.
    drop(std::mem::replace(
        &mut s.launcher,
        start_launcher(&s.pool, &s.env),
    ));
    ended(&s.server, &waiting, "FINISHED");
    let _ = &s.dir;
}

/// A launcher killed with SIGKILL takes its Terraform with it (the run's
/// process dies with its launcher): what is guaranteed is that the next
/// launcher on the work directory waits for what the run left working,
/// completes the log up to the crash, ends the run once with a clear
/// reason, and frees the stack, without applying anything again.
#[test]
#[ignore = "slow: terraform, faults"]
fn a_launcher_killed_during_an_apply_and_restarted_ends_the_run_once_with_its_log() {
    let Some(mut s) = Scenario::new(8) else {
        return;
    };
    let id = s.start_apply();
    let before_kill = log_text(&s.server, &id);
    let work_dir = s.launcher.work_dir.clone();
    s.launcher.proc.signal(Signal::SIGKILL);
    s.launcher.proc.wait_exit(Duration::from_secs(5));
    let env: Vec<(&str, &str)> = s
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The killed launcher's value keeps its temporary work directory alive.
    let _killed = std::mem::replace(
        &mut s.launcher,
        Launcher::start_in(&s.pool, &work_dir, &env),
    );
    s.launcher.wait_registered();
    let run = ended(&s.server, &id, "FAILED");
    assert!(
        reason(&run).starts_with("the launcher restarted while the run was in flight"),
        "{run:#}"
    );
    assert_eq!(
        s.marks().iter().filter(|m| *m == "start").count(),
        1,
        "the apply's operation ran once, and nothing ran it again"
    );
    let log = log_text(&s.server, &id);
    assert!(log.starts_with(&before_kill), "the log only grew");
    assert!(log.contains("null_resource.slow: Creating..."), "{log}");
    assert_eq!(log.matches("null_resource.slow: Creating...").count(), 1);
    // The stack is free again.
    let next = trigger(&s.server, "web", "proposed");
    ended(&s.server, &next, "FINISHED");
}

/// An outage longer than Terraform's own retries of its state save: the
/// apply completes, Terraform leaves `errored.tfstate`, and the launcher
/// hands it to the control plane once it is back. (The stack allows
/// Terraform no retries, so that "longer" is a few seconds.)
#[test]
#[ignore = "slow: terraform, faults"]
fn a_state_terraform_could_not_save_is_uploaded_by_the_launcher_when_the_control_plane_returns() {
    let Some(mut s) = Scenario::with_stack_flags(4, &["--env", "TF_HTTP_RETRY_MAX=0"]) else {
        return;
    };
    let id = s.start_apply();
    s.server.restart_after(Duration::from_secs(10));
    let run = ended(&s.server, &id, "FINISHED");
    let log = log_text(&s.server, &id);
    assert!(
        log.contains(
            "Terraform could not save its state to the control plane; the launcher saved it"
        ),
        "{log}"
    );
    assert!(!states(&run).contains(&"LOST".to_string()), "{run:#}");
    assert_eq!(log.matches("Creation complete").count(), 1, "{log}");
    s.assert_stored_once();
}

/// An outage longer than the workers' sessions: the launcher's session is
/// gone when the control plane comes back, so it registers again as the
/// same worker, keeps its lease, and the apply finishes.
#[test]
#[ignore = "slow: terraform, faults"]
fn a_launcher_whose_session_ran_out_in_an_outage_keeps_its_run() {
    let Some(mut s) = Scenario::with_server_flags(8, &["--session-ttl", "3s"]) else {
        return;
    };
    let worker = s.server.cli_json(&["worker", "list"])[0]["id"].clone();
    let id = s.start_apply();
    s.server.restart_after(Duration::from_secs(6));
    let run = ended(&s.server, &id, "FINISHED");
    assert!(!states(&run).contains(&"LOST".to_string()), "{run:#}");
    assert_eq!(run["worker_id"], worker, "the same worker finished it");
    let workers = s.server.cli_json(&["worker", "list"]);
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers:#}");
    assert!(
        s.launcher
            .proc
            .log()
            .contains("registering again as the same worker"),
        "{}",
        s.launcher.proc.log()
    );
    s.assert_applied_once(&id);
}
