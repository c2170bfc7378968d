//! `make demo` end to end: scripts/demo.sh --no-build, with the binaries
//! this test was built with and Terraform from .tools/, must walk a stack
//! through plan, UNCONFIRMED, confirm and apply, show the outputs and the
//! state versions, exit 0, and leave no process behind.

mod support;
mod tf;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(300);

#[test]
#[ignore = "slow: runs scripts/demo.sh with terraform (about 30 s)"]
fn demo_script_runs_a_stack_from_plan_to_apply_and_cleans_up() {
    if tf::terraform_bin().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pids_file = tmp.path().join("pids");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_gantry")).parent().unwrap();
    let mut child = Command::new(tf::root().join("scripts/demo.sh"))
        .arg("--no-build")
        .env("GANTRY_BIN_DIR", bin_dir)
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp.path())
        .env("GANTRY_DEMO_PIDS_FILE", &pids_file)
        .env_remove("GANTRY_URL")
        .env_remove("GANTRY_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the pipes while waiting, with a deadline.
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            // As Ctrl-C would: the script stops what it started.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
            panic!(
                "demo.sh still running after {DEADLINE:?}:\n{}\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let all = format!("{out}\n--- stderr ---\n{err}");
    assert!(status.success(), "demo.sh: {status}\n{all}");

    for expected in [
        "Plan: 1 to add, 0 to change, 0 to destroy.",
        "state:     UNCONFIRMED",
        "plan:      1 to add, 0 to change, 0 to destroy, 1 output to change",
        "provisioning, step 3 of 3",
        "Apply complete!",
        "state:     FINISHED",
        "output:    greeting = \"hello-gantry from ",
        "VERSION  SERIAL  RESOURCES",
        "What to try next",
    ] {
        assert!(all.contains(expected), "no {expected:?} in:\n{all}");
    }
    assert!(!all.contains("[DEBUG]"), "{all}");
    assert!(!all.contains('\u{1b}'), "colour under NO_COLOR:\n{all}");

    // Nothing left: not the processes it started, nor anything working in
    // its directory (a run's terraform), and the directory is gone.
    let pids = std::fs::read_to_string(&pids_file).unwrap();
    assert_eq!(pids.lines().count(), 2, "server and launcher: {pids}");
    for pid in pids.lines() {
        let proc = Path::new("/proc").join(pid.trim());
        let alive = std::fs::read_to_string(proc.join("stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "process {pid} outlived demo.sh");
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            assert!(
                !cwd.starts_with(tmp.path()),
                "process {:?} left working in {}",
                entry.file_name(),
                cwd.display()
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name != "pids")
        .collect();
    assert!(left.is_empty(), "demo.sh left {left:?}");
}
