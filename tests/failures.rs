//! Workers that die, restart, or come back late.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

/// A run printing a line every 100 ms for 20 s.
const CHATTY: &str = "for i in $(seq 1 200); do echo line $i; sleep 0.1; done";

#[test]
fn a_killed_launcher_is_declared_lost_within_the_lease_timeout() {
    let server = Server::start_with("2s");
    let pool = server.create_pool("fragile");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let id = server.submit("fragile", &["sh", "-c", CHATTY]);
    server.wait_state(&id, "APPLYING", Duration::from_secs(10));

    launcher.proc.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let run = server.wait_run_end(&id, Duration::from_secs(10));
    let elapsed = killed.elapsed();
    assert_eq!(run["state"], "FAILED");
    assert!(
        run["reason"].as_str().unwrap().starts_with("worker lost"),
        "{run}"
    );
    assert!(
        elapsed <= Duration::from_secs(4),
        "failed {elapsed:?} after the kill; lease timeout is 2s"
    );

    let workers = server.cli_json(&["worker", "list"]);
    assert_eq!(workers[0]["state"], "lost");
}

#[test]
fn a_restarted_launcher_reports_the_run_it_lost_at_once() {
    // A long lease: without the restart report the run would hang for a minute.
    let server = Server::start_with("60s");
    let pool = server.create_pool("restarts");
    let mut launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; {CHATTY}", pid_file.display());
    let id = server.submit("restarts", &["sh", "-c", &script]);
    server.wait_state(&id, "APPLYING", Duration::from_secs(10));
    let child_pid = wait_for("the run's pid", Duration::from_secs(5), || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|s| !s.is_empty())
    });

    let work_dir = launcher.work_dir.clone();
    // Killed, but its work directory (with the list of runs in flight) stays.
    launcher.proc.signal(Signal::SIGKILL);
    launcher.proc.wait_exit(Duration::from_secs(5));
    // The run's process dies with its launcher.
    wait_for("the run's process to die", Duration::from_secs(5), || {
        (!std::path::Path::new(&format!("/proc/{}", child_pid.trim())).exists()).then_some(())
    });

    let restarted = Instant::now();
    let again = Launcher::start_in(&pool, &work_dir, &[]);
    again.wait_registered();
    let run = server.wait_run_end(&id, Duration::from_secs(10));
    assert_eq!(run["state"], "FAILED");
    assert_eq!(
        run["reason"],
        "the launcher restarted while the run was in flight"
    );
    assert!(restarted.elapsed() < Duration::from_secs(10));

    // And it takes new work.
    let next = server.submit("restarts", &["echo", "back"]);
    assert_eq!(
        server.wait_run_end(&next, Duration::from_secs(10))["state"],
        "FINISHED"
    );
}

#[test]
fn a_worker_that_comes_back_late_is_fenced_off() {
    let server = Server::start_with("2s");
    let pool = server.create_pool("late");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; {CHATTY}", pid_file.display());
    let id = server.submit("late", &["sh", "-c", &script]);
    server.wait_state(&id, "APPLYING", Duration::from_secs(10));
    let child_pid = wait_for("the run's pid", Duration::from_secs(5), || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|s| !s.is_empty())
    });

    // Freeze the launcher past its lease: the run is declared lost...
    launcher.proc.signal(Signal::SIGSTOP);
    let run = server.wait_run_end(&id, Duration::from_secs(10));
    assert_eq!(run["state"], "FAILED");
    let log_before = server.logs(&id);

    // ...and when the launcher wakes up, it is told to abandon the run.
    launcher.proc.signal(Signal::SIGCONT);
    wait_for(
        "the launcher to abandon the run",
        Duration::from_secs(10),
        || launcher.proc.log().contains("run abandoned").then_some(()),
    );
    wait_for("the run's process to die", Duration::from_secs(5), || {
        (!std::path::Path::new(&format!("/proc/{}", child_pid.trim())).exists()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let run = server.run(&id);
    assert_eq!(run["state"], "FAILED", "an ended run never changes");
    assert!(run["reason"].as_str().unwrap().starts_with("worker lost"));
    // What the worker had spooled may still complete the log (the lease
    // that made a log may finish it), in order and without doubles; nothing
    // of the log it had is changed.
    let log_after = server.logs(&id);
    assert!(log_after.starts_with(&log_before), "the log only grows");
    let lines: Vec<String> = String::from_utf8_lossy(&log_after)
        .lines()
        .filter(|l| l.starts_with("line "))
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = (1..=lines.len()).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line once, in order");

    // The launcher itself carries on.
    let next = server.submit("late", &["echo", "still here"]);
    assert_eq!(
        server.wait_run_end(&next, Duration::from_secs(10))["state"],
        "FINISHED"
    );
}

/// What a killed launcher had spooled but not yet uploaded is uploaded by
/// the next launcher on its work directory: the log has every line the run
/// printed, once, in order, and the run ends with a clear reason.
#[test]
fn lines_spooled_when_a_launcher_is_killed_are_uploaded_by_the_next_one() {
    let server = Server::start_with("60s");
    let pool = server.create_pool("spooled");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let script = format!(
        "for i in $(seq 1 600); do echo line $i; echo $i > {c}.new; mv {c}.new {c}; sleep 0.02; done",
        c = count.display()
    );
    let id = server.submit("spooled", &["sh", "-c", &script]);
    server.wait_state(&id, "APPLYING", Duration::from_secs(10));
    wait_for("some lines uploaded", Duration::from_secs(10), || {
        (server.logs(&id).len() > 40).then_some(())
    });

    // The control plane stops answering: uploads stall while the run prints.
    server.proc.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(2));
    let work_dir = launcher.work_dir.clone();
    let mut launcher = launcher;
    launcher.proc.signal(Signal::SIGKILL);
    launcher.proc.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let printed: usize = std::fs::read_to_string(&count)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    server.proc.signal(Signal::SIGCONT);

    let again = Launcher::start_in(&pool, &work_dir, &[]);
    again.wait_registered();
    let run = server.wait_run_end(&id, Duration::from_secs(20));
    assert_eq!(run["state"], "FAILED");
    assert_eq!(
        run["reason"],
        "the launcher restarted while the run was in flight"
    );
    let log = String::from_utf8(server.logs(&id)).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let expected: Vec<String> = (1..=lines.len()).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line once, in order");
    // A line may still have been in the pipe when the launcher died; every
    // line it had written to its spool is there.
    assert!(
        lines.len() + 2 >= printed,
        "{} lines in the log, {printed} printed before the kill\n{}",
        lines.len(),
        again.proc.log()
    );
}
