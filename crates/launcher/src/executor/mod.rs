//! How a run's command executes. The process executor runs it as a child
//! process group; the Docker executor (issue #4) in a container.

pub mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What to execute, already decided by [`crate::run`].
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub run_id: String,
    pub command: Vec<String>,
    /// The complete environment of the run: nothing else leaks in.
    pub env: BTreeMap<String, String>,
    pub workspace: PathBuf,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Whether a Docker engine answers on `DOCKER_HOST` or the local socket.
pub fn docker_reachable() -> bool {
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) => match host.strip_prefix("unix://") {
            Some(path) => PathBuf::from(path),
            // A TCP engine: assume reachable; the executor reports otherwise.
            None => return !host.is_empty(),
        },
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    };
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}
