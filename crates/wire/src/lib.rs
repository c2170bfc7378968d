//! The wire types shared by the Gantry control plane, the launcher and the CLI.
//!
//! Everything that crosses the network lives here and nowhere else, so the
//! server and its clients cannot drift apart. The crate has no I/O.
//!
//! - [`run`]: runs, their states and transitions.
//! - [`pool`]: worker pools and the [`PoolToken`](token::PoolToken).
//! - [`worker`]: the launcher protocol (register, poll, heartbeat, logs, finish).
//! - [`stack`]: stacks, their runs' plans and outputs, state versions.
//! - [`error`]: the JSON error body and its stable codes.
//! - [`demand`]: demand on a pool, for autoscalers.

pub mod demand;
pub mod error;
pub mod pool;
pub mod run;
pub mod stack;
pub mod token;
pub mod worker;

/// Every API route lives under this prefix.
pub const API_PREFIX: &str = "/api/v1";

/// The version of this build. The server, the launcher and the CLI of one
/// release share it; the launcher reports it at registration.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Header carrying a run lease on log uploads (the body is raw bytes).
pub const LEASE_HEADER: &str = "gantry-lease";
/// Response header on log reads: the sequence number to ask for next.
pub const NEXT_SEQ_HEADER: &str = "gantry-next-seq";
/// Response header on log reads: `true` once the run ended and every chunk was read.
pub const LOG_COMPLETE_HEADER: &str = "gantry-log-complete";
/// Response header on log reads of an ended run: `FROM-TO` when chunks FROM
/// up to TO (excluded) were never uploaded (its worker was lost), and TO on
/// is stored; empty otherwise.
pub const LOG_GAP_HEADER: &str = "gantry-log-gap";

/// Whether a launcher of version `launcher` may work with a server of version
/// `server`. Same major and minor: the wire protocol only changes with a
/// minor release while we are at 0.x, and with a major release after.
pub fn versions_compatible(server: &str, launcher: &str) -> bool {
    fn major_minor(v: &str) -> Option<(u64, u64)> {
        let mut parts = v.trim_start_matches('v').split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
    match (major_minor(server), major_minor(launcher)) {
        (Some(s), Some(l)) => s == l,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compatible_on_major_minor_only() {
        assert!(versions_compatible("0.1.0", "0.1.7"));
        assert!(versions_compatible("0.1.0", "v0.1.0"));
        assert!(!versions_compatible("0.1.0", "0.2.0"));
        assert!(!versions_compatible("1.1.0", "0.1.0"));
        assert!(!versions_compatible("0.1.0", "garbage"));
    }
}
