//! `gantry-launcher`: the agent on every worker.
//!
//! Its life, one module per step:
//! 1. [`config`]: read and check the configuration; refuse bad values at start;
//! 2. [`register`]: prove possession of the pool key and get a session;
//! 3. [`agent`]: poll for runs (accept), heartbeat, drain on SIGTERM, deregister;
//! 4. [`run`]: execute one leased run with an [`executor`], stream its
//!    [`logs`], report its end;
//! 5. [`orphans`]: remember runs in flight, so a restarted launcher reports
//!    the ones it lost at once instead of leaving them to the lease timeout.
//!
//! It only ever connects out, over HTTP(S), through the standard proxy
//! variables when they are set.

mod agent;
mod client;
pub mod config;
mod executor;
mod git;
mod logs;
mod mask;
mod orphans;
mod phases;
mod planfile;
mod register;
mod run;
mod tool;
mod workspace;

use std::process::ExitCode;

/// Exit codes: what a supervisor (systemd, Kubernetes) and a human need to know.
pub mod exit {
    /// Drained and exited cleanly.
    pub const OK: u8 = 0;
    /// A runtime failure, e.g. the control plane stayed unreachable.
    pub const FAILURE: u8 = 1;
    /// The configuration is invalid; the message names the variable.
    pub const CONFIG: u8 = 2;
    /// The control plane refused the credentials (token, key, or a reset pool).
    pub const CREDENTIALS: u8 = 3;
    /// The control plane refused this launcher's version.
    pub const VERSION: u8 = 4;
}

pub fn main() -> ExitCode {
    let config = match config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gantry-launcher: configuration error: {error}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    config::init_logging(&config);
    // One thread is plenty (runs are separate processes) and keeps the idle
    // footprint small; it also makes child processes die with the launcher
    // (PR_SET_PDEATHSIG is tied to the spawning thread).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    ExitCode::from(runtime.block_on(agent::run(config)))
}
