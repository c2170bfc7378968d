//! The process executor: the run's command as a child process in a fresh
//! workspace directory, in its own process group (so stop and timeouts reach
//! everything it started), with exactly the environment the run defines.

use std::io::{PipeWriter, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::{Exit, RunSpec};
use crate::logs::{spawn_reader, SpoolSink};

pub struct ProcessRun {
    child: tokio::process::Child,
    pgid: Pid,
    /// The launcher's own end of the output pipe, for its lines.
    launcher_pipe: PipeWriter,
    reader: std::thread::JoinHandle<()>,
}

/// Signals a run's whole process group; cheap to copy, so the agent can
/// stop a run while another task waits on it.
#[derive(Debug, Clone, Copy)]
pub struct ProcessGroup {
    pgid: Pid,
}

impl ProcessRun {
    /// Starts the command. stdout and stderr share one pipe, so the log keeps
    /// their interleaving; a thread copies it into `sink`. The launcher adds
    /// its own lines to the same pipe, so they stay in order.
    pub fn start(spec: &RunSpec, sink: &SpoolSink) -> std::io::Result<ProcessRun> {
        let (reader, writer) = std::io::pipe()?;
        let mut command = tokio::process::Command::new(&spec.command[0]);
        command
            .args(&spec.command[1..])
            .current_dir(&spec.workspace)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer.try_clone()?))
            .stderr(Stdio::from(writer.try_clone()?))
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // If the launcher dies, so does the run: a restarted launcher
                // reports it instead of leaving it running unsupervised.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn()?;
        drop(command);
        tracing::debug!(run_id = %spec.run_id, pid = ?child.id(), "run process started");
        let pgid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
        let reader = spawn_reader(reader, sink.clone());
        Ok(ProcessRun {
            child,
            pgid,
            launcher_pipe: writer,
            reader,
        })
    }

    pub fn log_line(&mut self, text: &str) {
        let _ = writeln!(self.launcher_pipe, "gantry: {text}");
    }

    /// Once the group is dead: closes the launcher's end and waits for the
    /// reader to copy the rest of the pipe.
    pub async fn finish_output(self) {
        let ProcessRun {
            launcher_pipe,
            reader,
            ..
        } = self;
        drop(launcher_pipe);
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    }

    pub async fn wait(&mut self) -> Exit {
        match self.child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(signal)) => Exit::Signal(signal),
                _ => Exit::Code(-1),
            },
            Err(_) => Exit::Code(-1),
        }
    }

    pub fn group(&self) -> ProcessGroup {
        ProcessGroup { pgid: self.pgid }
    }
}

impl ProcessGroup {
    /// Asks every process of the run to stop.
    pub fn terminate(&self) {
        let _ = killpg(self.pgid, Signal::SIGTERM);
    }

    /// Kills every process of the run, including any left in the background
    /// after the main one exited (they would hold the log pipe open).
    pub fn kill(&self) {
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }
}
