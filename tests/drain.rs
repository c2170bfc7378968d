//! Draining: by signal (SIGTERM) and from the API.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

#[test]
fn sigterm_finishes_the_runs_in_flight_takes_no_more_and_exits_zero() {
    let server = Server::start();
    let pool = server.create_pool("drain");
    let mut launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let id = server.submit("drain", &["sh", "-c", "sleep 1.5; echo finished in flight"]);
    server.wait_state(&id, "APPLYING", Duration::from_secs(10));

    launcher.proc.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let later = server.submit("drain", &["echo", "too late"]);
    assert_eq!(
        launcher.proc.wait_exit(Duration::from_secs(15)),
        0,
        "{}",
        launcher.proc.log()
    );
    assert_eq!(server.run(&id)["state"], "FINISHED");
    assert_eq!(server.logs(&id), b"finished in flight\n");
    assert_eq!(
        server.run(&later)["state"],
        "READY",
        "a draining launcher takes no new run"
    );
    let workers = server.cli_json(&["worker", "list", "--all"]);
    assert_eq!(workers[0]["state"], "gone");
}

#[test]
fn an_idle_launcher_exits_at_once_on_sigterm() {
    let server = Server::start();
    let pool = server.create_pool("idle");
    let mut launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let started = Instant::now();
    launcher.proc.signal(Signal::SIGTERM);
    assert_eq!(launcher.proc.wait_exit(Duration::from_secs(10)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // A run submitted now waits for another worker: nothing was leased to the leaving one.
    let id = server.submit("idle", &["true"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.run(&id)["state"], "READY");
}

#[test]
fn a_second_signal_stops_the_runs_in_flight() {
    let server = Server::start();
    let pool = server.create_pool("impatient");
    let mut launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let id = server.submit("impatient", &["sleep", "60"]);
    server.wait_state(&id, "APPLYING", Duration::from_secs(10));
    launcher.proc.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    launcher.proc.signal(Signal::SIGTERM);
    assert_eq!(launcher.proc.wait_exit(Duration::from_secs(10)), 0);
    let run = server.run(&id);
    assert_eq!(run["state"], "STOPPED", "{run}");
    assert_eq!(run["reason"], "the launcher was told to stop");
}

#[test]
fn drain_and_undrain_from_the_cli() {
    let server = Server::start();
    let pool = server.create_pool("ops");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let worker = server.cli_json(&["worker", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let drained = server.cli_json(&["worker", "drain", &worker]);
    assert_eq!(drained["state"], "drained");
    let id = server.submit("ops", &["echo", "after undrain"]);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        server.run(&id)["state"],
        "READY",
        "a drained worker takes nothing"
    );

    server.cli_json(&["worker", "undrain", &worker]);
    assert_eq!(
        server.wait_run_end(&id, Duration::from_secs(10))["state"],
        "FINISHED"
    );
    assert_eq!(
        server.cli(&["worker", "drain", "nope"]).status.code(),
        Some(3)
    );
}

/// A worker an operator drained still exits at once on SIGTERM: its open
/// poll, which waits without looking for work, is answered as soon as the
/// launcher says it is leaving.
#[test]
fn a_drained_launcher_exits_at_once_on_sigterm() {
    let server = Server::start();
    let pool = server.create_pool("drained");
    let mut launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let worker = server.cli_json(&["worker", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.cli_json(&["worker", "drain", &worker]);
    wait_for(
        "the launcher to hear of the drain",
        Duration::from_secs(10),
        || {
            launcher
                .proc
                .log()
                .contains("drain changed by an operator")
                .then_some(())
        },
    );
    launcher.proc.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    assert_eq!(launcher.proc.wait_exit(Duration::from_secs(10)), 0);
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exited {:?} after SIGTERM",
        signalled.elapsed()
    );
}
