//! How a run's command executes. The process executor runs it as a child
//! process group; the Docker executor in a container from the run's image.
//! [`crate::run`] drives both the same way: [`Executor::start`], then
//! [`Running::wait`] while a [`Stopper`] serves stop requests and timeouts.

pub mod docker;
pub mod process;
pub mod trust;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, ExecutorKind};
use crate::logs::SpoolSink;

/// The PATH a run gets unless it sets one: for processes on this host. (In
/// a container the image's PATH applies instead.)
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to execute, already decided by [`crate::run`].
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub run_id: String,
    /// The lease the command runs under: what names its container, so a
    /// plan and an apply of one run never share one.
    pub lease_id: String,
    pub command: Vec<String>,
    /// The complete environment of the run: nothing else leaks in.
    pub env: BTreeMap<String, String>,
    /// The workspace on this host (the launcher's view).
    pub workspace: PathBuf,
    /// The runner image the run names, if any (Docker executor).
    pub image: Option<String>,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The container hit its memory limit and the kernel killed it.
    OutOfMemory(i32),
}

/// The executor the launcher was configured with, ready to start runs.
pub enum Executor {
    Process {
        /// The CA file runs trust ([`trust`]), when there are extra CAs.
        ca_file: Option<PathBuf>,
    },
    Docker(Arc<docker::DockerExecutor>),
}

impl Executor {
    /// Connects to and checks what the executor needs, once, at launcher
    /// start, and clears what a previous launcher on this work directory left
    /// behind (workspaces, spools, containers), but for what belongs to the
    /// runs it left in flight (`keep`: their lease keys), which are yet to be
    /// recovered, and any workspace holding a state Terraform could not
    /// save. The caller holds the work directory's lock. An error names the
    /// setting to fix.
    pub async fn open(config: &Config, keep: &[String]) -> Result<Executor, String> {
        clear_dir(&config.work_dir.join("workspaces"), keep);
        clear_dir(&config.work_dir.join("logs"), keep);
        let ca_file = trust::write_ca_file(&config.work_dir, &config.extra_roots)?;
        match config.executor {
            ExecutorKind::Process => Ok(Executor::Process { ca_file }),
            ExecutorKind::Docker => {
                let docker = docker::DockerExecutor::open(config, ca_file).await?;
                docker.reap().await;
                Ok(Executor::Docker(Arc::new(docker)))
            }
        }
    }

    /// The CA file for tools the launcher itself runs for a run (git), on
    /// this host.
    pub fn host_ca_file(&self) -> Option<&Path> {
        match self {
            Executor::Process { ca_file } => ca_file.as_deref(),
            Executor::Docker(docker) => docker.ca_file(),
        }
    }

    /// Where the run sees its workspace.
    pub fn run_workspace(&self, host_workspace: &Path) -> PathBuf {
        match self {
            Executor::Process { .. } => host_workspace.to_path_buf(),
            Executor::Docker(_) => PathBuf::from(docker::WORKSPACE),
        }
    }

    /// Starts the run; its output goes to `sink`. An error is the run's
    /// failure reason.
    pub async fn start(&self, spec: &RunSpec, sink: &SpoolSink) -> Result<Running, String> {
        match self {
            Executor::Process { ca_file } => {
                let mut spec = spec.clone();
                if let Some(file) = ca_file {
                    trust::add_ca_env(&mut spec.env, &file.display().to_string());
                }
                process::ProcessRun::start(&spec, sink)
            }
            .map(Running::Process)
            .map_err(|error| format!("cannot start `{}`: {error}", spec.command[0])),
            Executor::Docker(docker) => docker.start(spec, sink).await.map(Running::Docker),
        }
    }

    /// Removes what the run left (its container and temporary volumes),
    /// whether it started, failed to start, or was interrupted while starting.
    pub async fn cleanup(&self, run_id: &str, lease_id: &str) {
        if let Executor::Docker(docker) = self {
            docker.cleanup(run_id, lease_id).await;
        }
    }
}

/// A started run.
pub enum Running {
    Process(process::ProcessRun),
    Docker(docker::DockerRun),
}

impl Running {
    /// Waits for the command to end. Its output may still be arriving.
    pub async fn wait(&mut self) -> Exit {
        match self {
            Running::Process(run) => run.wait().await,
            Running::Docker(run) => run.wait().await,
        }
    }

    pub fn stopper(&self) -> Stopper {
        match self {
            Running::Process(run) => Stopper::Process(run.group()),
            Running::Docker(run) => Stopper::Docker(run.stopper()),
        }
    }

    /// Adds a launcher line to the run's log, in order with its output.
    pub fn log_line(&mut self, text: &str) {
        match self {
            Running::Process(run) => run.log_line(text),
            Running::Docker(run) => run.log_line(text),
        }
    }

    /// After the end: waits until all the run's output is in the spool.
    pub async fn finish_output(self) {
        match self {
            Running::Process(run) => run.finish_output().await,
            Running::Docker(run) => run.finish_output().await,
        }
    }
}

/// Stops a run while another task waits on it; cheap to clone.
#[derive(Clone)]
pub enum Stopper {
    Process(process::ProcessGroup),
    Docker(docker::ContainerStopper),
}

impl Stopper {
    /// Asks the run to stop (SIGTERM).
    pub fn terminate(&self) {
        match self {
            Stopper::Process(group) => group.terminate(),
            Stopper::Docker(container) => container.signal("SIGTERM"),
        }
    }

    /// Kills the run and everything it started (SIGKILL).
    pub fn kill(&self) {
        match self {
            Stopper::Process(group) => group.kill(),
            Stopper::Docker(container) => container.signal("SIGKILL"),
        }
    }

    /// After the command exited: kills what it left in the background. A
    /// container needs nothing: its processes die with its first one.
    pub fn kill_leftovers(&self) {
        if let Stopper::Process(group) = self {
            group.kill();
        }
    }
}

/// Empties a directory of per-run leftovers; it is recreated on use.
fn clear_dir(dir: &Path, keep: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.iter().any(|key| name.starts_with(key.as_str())) {
            continue;
        }
        if let Some(state) = crate::recovery::unsaved_state(&path) {
            tracing::error!(path = %state.display(), "a previous launcher left a Terraform state the control plane may not have; kept");
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a leftover of a previous launcher")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot remove a leftover of a previous launcher")
            }
        }
    }
}
