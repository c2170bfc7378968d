//! What the store takes and returns. Timestamps are Unix milliseconds.

use std::collections::BTreeMap;

use gantry_wire::run::{RunState, RunType};

#[derive(Debug, Clone)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A pool's public key and the hash of its credential.
#[derive(Debug, Clone)]
pub struct PoolKey {
    pub public_key_pem: String,
    pub key_fingerprint: String,
    pub credential_hash: String,
}

#[derive(Debug, Clone)]
pub struct NewPool {
    pub name: String,
    pub description: String,
    pub key: PoolKey,
}

#[derive(Debug, Clone)]
pub struct PoolRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub key: PoolKey,
    pub generation: i64,
    pub cycled_at: Option<i64>,
    pub created_at: i64,
    pub workers: i64,
    pub queued_runs: i64,
}

/// What a pool's key seals on one stack: the names of its secret
/// variables, and its runs whose stored workspace (plan) waits to be
/// applied. A pool reset to another key leaves these unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedToPool {
    pub stack_id: String,
    pub stack_name: String,
    pub secret_env: Vec<String>,
    pub runs: Vec<String>,
}

/// A reset pool, and the runs discarded because their stored workspace was
/// sealed to the old key.
#[derive(Debug, Clone)]
pub struct PoolReset {
    pub pool: PoolRecord,
    pub discarded: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewWorker {
    pub pool_id: String,
    pub pool_generation: i64,
    pub version: String,
    pub hostname: String,
    pub tags: BTreeMap<String, String>,
    pub max_concurrent_runs: u32,
}

#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub id: String,
    pub pool_id: String,
    pub pool_name: String,
    pub version: String,
    pub hostname: String,
    pub tags: BTreeMap<String, String>,
    pub max_concurrent_runs: u32,
    pub drain: bool,
    pub registered_at: i64,
    pub last_seen: i64,
    pub gone_at: Option<i64>,
    /// IDs of the runs it holds a lease on.
    pub running: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub worker_id: String,
    pub token_hash: String,
    pub expires_at: i64,
}

/// An authenticated worker session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub worker_id: String,
    pub pool_id: String,
    pub drain: bool,
    pub registered_at: i64,
    /// When the worker's pool was last cycled.
    pub pool_cycled_at: Option<i64>,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub pool_id: String,
    pub run_type: RunType,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub image: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub pool_id: String,
    pub pool_name: String,
    pub run_type: RunType,
    pub state: RunState,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub image: Option<String>,
    pub worker_id: Option<String>,
    pub lease_id: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub stop_requested: bool,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub stack_id: Option<String>,
    pub stack_name: Option<String>,
    pub commit_sha: Option<String>,
    /// JSON `{add, change, destroy}`.
    pub plan: Option<String>,
    /// JSON array of outputs, sensitive values masked.
    pub outputs: Option<String>,
    /// Chunks of earlier leases: this lease's chunk `n` is stored as `log_base + n`.
    pub log_base: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct TransitionRecord {
    pub state: RunState,
    pub at: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HeldLeaseRef {
    pub run_id: String,
    pub lease_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseRenewal {
    /// Leases the worker no longer holds: it must abandon these runs.
    pub abandon: Vec<String>,
    /// LOST runs that this renewal brought back to APPLYING.
    pub resumed: Vec<String>,
}

/// How a leased run ends.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pool_id: Option<String>,
    pub state: Option<RunState>,
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkWrite {
    Inserted,
    /// The same bytes were already stored under this sequence number.
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct LogChunk {
    pub seq: u64,
    pub data: Vec<u8>,
}
