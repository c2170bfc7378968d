//! The launcher protocol, in lifecycle order:
//!
//! 1. [`register`]: prove possession of the pool's private key, get a session;
//! 2. [`poll`]: long-poll for run leases and instructions (accept);
//! 3. [`heartbeat`]: renew the session and the leases held;
//! 4. [`report_state`], [`put_log_chunk`], [`finish_run`]: run a leased run;
//! 5. [`put_recovered_state`]: hand over the state an apply could not save;
//! 6. [`deregister`]: leave after draining.

mod accept;
mod recovery;
mod register;
mod run;
mod stack;

pub use accept::*;
pub use recovery::*;
pub use register::*;
pub use run::*;
pub use stack::*;
