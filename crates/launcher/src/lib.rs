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
mod recovery;
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

#[cfg(test)]
mod layering {
    /// Configuration is plain data that executors read: it calls into no
    /// other module of the launcher, and executors do not reach back into
    /// the run logic (no import circle).
    #[test]
    fn configuration_and_executors_stay_below_the_run_logic() {
        let config = include_str!("config.rs");
        assert!(!config.contains(concat!("crate", "::")), "config.rs");
        for (name, text) in [
            ("executor/mod.rs", include_str!("executor/mod.rs")),
            ("executor/docker.rs", include_str!("executor/docker.rs")),
            ("executor/process.rs", include_str!("executor/process.rs")),
            ("executor/trust.rs", include_str!("executor/trust.rs")),
            (
                "executor/docker/host.rs",
                include_str!("executor/docker/host.rs"),
            ),
            (
                "executor/docker/image.rs",
                include_str!("executor/docker/image.rs"),
            ),
            (
                "executor/docker/running.rs",
                include_str!("executor/docker/running.rs"),
            ),
        ] {
            for upper in ["run", "phases", "agent"] {
                for import in [format!("crate::{upper}::"), format!("use crate::{upper}")] {
                    assert!(!text.contains(&import), "{name} uses {import}");
                }
            }
        }
    }
}
