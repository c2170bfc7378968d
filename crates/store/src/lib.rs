//! Gantry's storage.
//!
//! The control plane talks to its database only through the [`Store`] trait.
//! The trait speaks the domain (claim a run, renew leases, put a log chunk),
//! never SQL. Its one implementation, [`SqlStore`] ([`sql`]), runs the same
//! queries on SQLite (the default: one process, one file, one writer) or on
//! PostgreSQL (several control-plane replicas on one database, with row
//! locks); each engine makes the operations atomic its own way.
//!
//! Invariants every implementation keeps:
//! - a READY run is claimed by at most one worker, and gets a fresh lease ID;
//! - every write about a leased run checks the lease ID (fencing) and fails
//!   with [`StoreError::LeaseLost`] when it no longer matches;
//! - a terminal state never changes; every state change is recorded in the
//!   run's transitions with its time;
//! - log chunk `(run, seq)` is written once; an identical rewrite succeeds,
//!   a different one is a conflict.

mod browse;
mod demand_store;
mod records;
pub mod sql;
mod stack_store;

use async_trait::async_trait;
use gantry_wire::run::RunState;

pub use browse::*;
pub use demand_store::*;
pub use records::*;
pub use sql::{Engine, SqlStore};
pub use stack_store::*;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the run's lease is no longer held by this worker")]
    LeaseLost,
    #[error("database error: {0}")]
    Database(String),
    /// A value encrypted at rest cannot be read with the configured keyring.
    #[error("secrets at rest: {0}")]
    SecretsKey(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(error.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(error.to_string())
    }
}

/// Everything the control plane stores.
pub trait Store:
    TokenStore
    + PoolStore
    + WorkerStore
    + RunStore
    + LogStore
    + StackStore
    + StateStore
    + DemandStore
    + BrowseStore
{
}
impl<
        T: TokenStore
            + PoolStore
            + WorkerStore
            + RunStore
            + LogStore
            + StackStore
            + StateStore
            + DemandStore
            + BrowseStore,
    > Store for T
{
}

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    async fn count_api_tokens(&self) -> Result<i64>;
    async fn insert_api_token(
        &self,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<ApiTokenRecord>;
    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>>;
    async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>>;
    /// Refuses (`Conflict`) to revoke the last active token: nobody could
    /// use the API after that.
    async fn revoke_api_token(&self, id: &str, now: i64) -> Result<()>;
}

#[async_trait]
pub trait PoolStore: Send + Sync + 'static {
    /// Fails with `Conflict` when the name is taken.
    async fn create_pool(&self, pool: &NewPool, now: i64) -> Result<PoolRecord>;
    async fn list_pools(&self) -> Result<Vec<PoolRecord>>;
    async fn find_pool(&self, id_or_name: &str) -> Result<Option<PoolRecord>>;
    /// The pool's stacks with something sealed to its key (secret
    /// variables, or stored workspaces of UNCONFIRMED or CONFIRMED runs), by name.
    async fn sealed_to_pool(&self, pool_id: &str) -> Result<Vec<SealedToPool>>;
    /// New key and credential; bumps the generation and ends every session
    /// of the pool's workers, so the old token and its sessions die at once.
    /// When the key changes, UNCONFIRMED and CONFIRMED runs whose stored
    /// workspace is sealed to the old key end DISCARDED, saying why.
    async fn reset_pool(&self, pool_id: &str, key: &PoolKey, now: i64) -> Result<PoolReset>;
    /// Workers registered before `now` are told to finish and exit.
    async fn cycle_pool(&self, pool_id: &str, now: i64) -> Result<PoolRecord>;
    /// Refuses (`Conflict`, naming them) while stacks use the pool, even
    /// with `force`. Refuses (`Conflict`) while runs are pending unless `force`, in which
    /// case they end CANCELED or FAILED. Returns the IDs of the runs ended.
    async fn delete_pool(&self, pool_id: &str, force: bool, now: i64) -> Result<Vec<String>>;
}

#[async_trait]
pub trait WorkerStore: Send + Sync + 'static {
    /// Records a registration nonce; false if it was already used. (A nonce
    /// is kept until `expires_at`, after which its registration's timestamp
    /// is refused anyway.)
    async fn use_nonce(&self, nonce: &str, expires_at: i64) -> Result<bool>;
    /// Deletes registration nonces and worker sessions past their expiry;
    /// returns how many rows went. A clean-up duty, not a registration's.
    async fn purge_expired(&self, now: i64) -> Result<u64>;
    async fn register_worker(
        &self,
        worker: &NewWorker,
        session: &NewSession,
        now: i64,
    ) -> Result<WorkerRecord>;
    /// Gives `session.worker_id`, a worker of `worker.pool_id` registered
    /// under the pool's current generation and not gone, a new session (its
    /// leases stay valid). `None` when there is no such worker.
    async fn resume_worker(
        &self,
        worker: &NewWorker,
        session: &NewSession,
        now: i64,
    ) -> Result<Option<WorkerRecord>>;
    async fn add_session(&self, session: &NewSession, now: i64) -> Result<()>;
    /// The live session for a token hash: unexpired, of a worker still
    /// registered, made under the pool's current generation.
    async fn find_session(&self, token_hash: &str, now: i64) -> Result<Option<SessionRecord>>;
    /// Records when each of these workers was last heard from (never
    /// moving a `last_seen` back), in one transaction.
    async fn touch_workers(&self, heard: &[(String, i64)]) -> Result<()>;
    async fn set_worker_drain(&self, worker_id: &str, drain: bool) -> Result<WorkerRecord>;
    async fn deregister_worker(&self, worker_id: &str, now: i64) -> Result<()>;
    async fn find_worker(&self, worker_id: &str) -> Result<Option<WorkerRecord>>;
    async fn list_workers(
        &self,
        pool_id: Option<&str>,
        include_gone: bool,
    ) -> Result<Vec<WorkerRecord>>;
}

#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Inserts a run, QUEUED then READY.
    async fn insert_run(&self, run: &NewRun, now: i64) -> Result<RunRecord>;
    /// Whether the pool has a run waiting for a worker (READY or
    /// CONFIRMED, not leased): what [`RunStore::claim_runs`] looks for first,
    /// on a reader.
    async fn pool_has_claimable_runs(&self, pool_id: &str) -> Result<bool>;
    /// Leases up to `max` READY runs of the pool to the worker, oldest first.
    async fn claim_runs(
        &self,
        pool_id: &str,
        worker_id: &str,
        max: u32,
        lease_expires_at: i64,
        now: i64,
    ) -> Result<Vec<RunRecord>>;
    /// Extends the leases the worker still holds, resuming a LOST run whose
    /// worker is back (LOST → APPLYING); reports the others.
    async fn renew_leases(
        &self,
        worker_id: &str,
        held: &[HeldLeaseRef],
        lease_expires_at: i64,
        now: i64,
    ) -> Result<LeaseRenewal>;
    /// Leased runs of the worker on which a user asked for a stop.
    async fn stop_requests(&self, worker_id: &str) -> Result<Vec<String>>;
    /// The worker moved the run to a new phase (fenced by the lease).
    async fn report_state(
        &self,
        run_id: &str,
        lease_id: &str,
        state: RunState,
        now: i64,
    ) -> Result<RunRecord>;
    /// Ends a leased run (fenced by the lease).
    async fn finish_run(
        &self,
        run_id: &str,
        lease_id: &str,
        end: &RunEnd,
        now: i64,
    ) -> Result<RunRecord>;
    /// A queued run is CANCELED at once; a leased one is flagged for its worker.
    async fn request_stop(&self, run_id: &str, now: i64) -> Result<RunRecord>;
    /// Ends every leased run whose lease expired before `now`: FAILED, but
    /// a stack run that was APPLYING becomes LOST (it keeps its lease ID, its
    /// stack and its state lock, and its worker may still come back).
    async fn expire_leases(&self, now: i64) -> Result<Vec<RunRecord>>;
    /// Moves every lease that expires before `at` to `at`: after start-up or
    /// a pause, workers get a full lease period to be heard again before
    /// the reaper judges them. Returns how many leases moved.
    async fn extend_leases(&self, at: i64) -> Result<u64>;
    /// Fails a run its launcher reported as orphaned by a restart, if that
    /// launcher's pool still holds it under `lease_id`.
    async fn fail_orphaned_run(
        &self,
        pool_id: &str,
        run_id: &str,
        lease_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<RunRecord>>;
    async fn find_run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>>;
    async fn run_transitions(&self, run_id: &str) -> Result<Vec<TransitionRecord>>;
}

#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    async fn put_log_chunk(
        &self,
        run_id: &str,
        lease_id: &str,
        seq: u64,
        data: &[u8],
    ) -> Result<ChunkWrite>;
    /// Chunks from `from_seq` on, in order and without gaps, up to about `max_bytes`.
    async fn read_log_chunks(
        &self,
        run_id: &str,
        from_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<LogChunk>>;
    /// The first stored chunk at or after `from`: tells a gap (a chunk never
    /// uploaded) from the end of the log.
    async fn next_stored_log_seq(&self, run_id: &str, from: u64) -> Result<Option<u64>>;
    /// The sequence numbers in `from..to` not yet stored, the first `limit`
    /// of them at most.
    async fn missing_log_chunks(
        &self,
        run_id: &str,
        from: u64,
        to: u64,
        limit: u64,
    ) -> Result<Vec<u64>>;
}
