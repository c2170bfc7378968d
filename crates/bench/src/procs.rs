//! Child processes (the server and launchers) that never outlive the bench.
//!
//! Three layers make sure of it:
//! - every [`Proc`] kills and reaps its process when dropped (also while a
//!   panic unwinds);
//! - every live PID sits in a registry that [`kill_all`] empties, called by
//!   the panic hook, the signal handler and before exit;
//! - each child gets `PR_SET_PDEATHSIG(SIGKILL)`, so even a `kill -9` of the
//!   bench takes them along. That signal follows the *thread* that spawned
//!   the child, so children are only spawned from the main thread (see
//!   [`Proc::spawn`]).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Set by the signal handler: no new child may start.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Temporary directories to remove if the bench is interrupted.
static TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Whether SIGINT/SIGTERM/SIGHUP arrived (the handler then exits the process).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Remembers a temporary directory for [`remove_temp_dirs`].
pub fn track_temp_dir(path: &Path) {
    TEMP_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_path_buf());
}

pub fn untrack_temp_dir(path: &Path) {
    TEMP_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| p != path);
}

/// Removes the tracked temporary directories (after an interrupt, when no
/// destructor runs).
fn remove_temp_dirs() {
    let dirs = std::mem::take(&mut *TEMP_DIRS.lock().unwrap_or_else(|p| p.into_inner()));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// SIGKILLs every child still registered. Safe to call from anywhere: a PID
/// stays registered until its process was reaped, so it cannot be reused.
pub fn kill_all() {
    let pids = match LIVE.lock() {
        Ok(pids) => pids.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    for pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// The panic hook and the signal handler both kill every child.
pub fn install_guards() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all();
        previous(info);
    }));
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        {
            let _no_spawn = LIVE.lock().unwrap_or_else(|p| p.into_inner());
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
        kill_all();
        // Let the killed processes go (and the main thread notice) before the directories do.
        tokio::time::sleep(Duration::from_millis(200)).await;
        remove_temp_dirs();
        eprintln!("gantry-bench: interrupted; killed every child process and removed the temporary directories");
        std::process::exit(130);
    });
}

/// A child process that is killed and reaped when dropped.
pub struct Proc {
    child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `command` with stdout and stderr into `log`.
    ///
    /// Call this from the main thread only (the bench's `block_on` future):
    /// the death signal fires when the spawning thread ends, and tokio's
    /// blocking-pool threads end when idle.
    pub fn spawn(mut command: Command, name: impl Into<String>, log: &Path) -> Result<Proc> {
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        command.stdout(Stdio::from(out.try_clone()?));
        Proc::spawn_with_stdout(command, name, log, out)
    }

    /// As [`Proc::spawn`], with stdout a pipe for the caller to read
    /// (stderr still goes to `log`).
    pub fn spawn_piped(
        mut command: Command,
        name: impl Into<String>,
        log: &Path,
    ) -> Result<(Proc, std::process::ChildStdout)> {
        let err = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        command.stdout(Stdio::piped());
        let mut proc = Proc::spawn_with_stdout(command, name, log, err)?;
        let stdout = proc.child.stdout.take().context("the child's stdout")?;
        Ok((proc, stdout))
    }

    fn spawn_with_stdout(
        mut command: Command,
        name: impl Into<String>,
        log: &Path,
        err: File,
    ) -> Result<Proc> {
        let name = name.into();
        command.stdin(Stdio::null()).stderr(Stdio::from(err));
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut registry = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        if INTERRUPTED.load(Ordering::SeqCst) {
            anyhow::bail!("interrupted: not starting {name}");
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        registry.push(child.id());
        Ok(Proc {
            child,
            name,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// None while running; the exit status once it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The end of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails with the log tail if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            anyhow::bail!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail(15)
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // Bounded: SIGKILL cannot be ignored, but do not hang on a D-state process.
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = self.child.id();
        let mut registry = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        registry.retain(|p| *p != pid);
    }
}

/// Kills many processes at once (SIGKILL to all first, then reap), which is
/// much faster than dropping them one by one.
pub fn kill_many(procs: Vec<Proc>) {
    for proc in &procs {
        let _ = kill(Pid::from_raw(proc.pid() as i32), Signal::SIGKILL);
    }
    drop(procs);
}
