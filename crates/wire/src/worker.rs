//! The launcher protocol: register, poll (accept), heartbeat, report, log,
//! finish, deregister. Every call after registration carries the worker's
//! session token; every call about a run carries its lease ID, so a worker
//! that lost a lease is fenced off from the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::run::{RunState, RunType};

/// `POST /api/v1/worker/register`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub pool_id: String,
    /// The credential from the pool token.
    pub credential: String,
    /// The launcher's version.
    pub version: String,
    pub hostname: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub max_concurrent_runs: u32,
    /// Milliseconds since the Unix epoch, part of the signed message.
    pub timestamp_ms: i64,
    /// Random, single use: a captured registration cannot be replayed.
    pub nonce: String,
    /// Base64 RSA PKCS#1 v1.5 SHA-256 signature of [`registration_message`]
    /// made with the pool's private key.
    pub signature: String,
    /// Runs this launcher held when it last stopped without finishing them
    /// (it crashed or was killed); the server ends them at once.
    #[serde(default)]
    pub orphaned_runs: Vec<OrphanedRun>,
    /// The worker this launcher was before its session ran out (a long
    /// control-plane outage) or before it restarted on the same work
    /// directory. A worker of the same pool is resumed under a new session,
    /// so the leases it holds stay valid; otherwise a new worker is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_worker_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrphanedRun {
    pub run_id: String,
    pub lease_id: String,
}

/// The exact bytes a launcher signs to prove it holds the pool's private key.
pub fn registration_message(pool_id: &str, timestamp_ms: i64, nonce: &str) -> Vec<u8> {
    format!("gantry-register-v1\n{pool_id}\n{timestamp_ms}\n{nonce}\n").into_bytes()
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    pub worker_id: String,
    /// Bearer token for every later call. Short-lived: renewed by heartbeats.
    pub session_token: String,
    pub heartbeat_interval_ms: u64,
    pub lease_timeout_ms: u64,
    pub server_version: String,
}

/// `POST /api/v1/worker/poll`: "give me work or instructions". The server
/// holds the request open up to `wait_ms` until there is something to say.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PollRequest {
    /// How many more runs the launcher will take now.
    pub free_slots: u32,
    pub wait_ms: u64,
    /// Instructions the launcher already acts on: the poll answers early
    /// only for news, so a pending stop or exit does not spin it.
    #[serde(default)]
    pub known: KnownInstructions,
}

/// What a launcher already knows it was told (see `PollRequest::known`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct KnownInstructions {
    /// Runs it was told to stop.
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub exit: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PollResponse {
    #[serde(default)]
    pub leases: Vec<RunLease>,
    #[serde(default)]
    pub instructions: Instructions,
}

/// What the server wants the worker to do besides new work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Instructions {
    /// Runs a user asked to stop: TERM, then KILL after the grace period.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Runs whose lease this worker no longer holds: kill them and report
    /// nothing more about them.
    #[serde(default)]
    pub abandon: Vec<String>,
    /// Take no new runs.
    #[serde(default)]
    pub drain: bool,
    /// Finish the runs in flight, then exit (the pool was cycled).
    #[serde(default)]
    pub exit: bool,
}

impl Instructions {
    pub fn is_empty(&self) -> bool {
        self == &Instructions::default()
    }
}

/// A run handed to exactly one worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunLease {
    pub run_id: String,
    /// Fencing token: every later call about the run must carry it.
    pub lease_id: String,
    #[serde(rename = "type")]
    pub run_type: RunType,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// For a run on a stack: what to fetch, init, plan or apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<crate::stack::StackJob>,
}

/// `POST /api/v1/worker/heartbeat`: renews the session and the leases.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatRequest {
    pub runs: Vec<HeldLease>,
    /// The launcher is draining (it got SIGTERM): give it no more runs.
    #[serde(default)]
    pub draining: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeldLease {
    pub run_id: String,
    pub lease_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    pub instructions: Instructions,
    /// A fresh session token when the current one is past half its life;
    /// the old one stays valid until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

/// `POST /api/v1/worker/runs/{id}/state`: the run entered a new phase.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportState {
    pub lease_id: String,
    pub state: RunState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    Stopped,
    /// A tracked run's plan phase succeeded: it waits UNCONFIRMED, with its
    /// workspace stored, and the lease ends.
    Planned,
}

/// `POST /api/v1/worker/runs/{id}/finish`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FinishRun {
    pub lease_id: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many log chunks the run produced (sequence numbers 0..n). The
    /// server refuses to finish while any is missing, so no log is lost.
    pub log_chunks: u64,
}
