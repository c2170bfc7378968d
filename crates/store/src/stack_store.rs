//! Stacks, runs on stacks, and the Terraform state backend.

use std::collections::BTreeMap;

use async_trait::async_trait;
use gantry_wire::run::RunType;

use crate::{Result, RunRecord};

#[derive(Debug, Clone, Default)]
pub struct StackRecord {
    pub id: String,
    pub name: String,
    pub pool_id: String,
    pub pool_name: String,
    pub git_url: Option<String>,
    pub git_ref: Option<String>,
    /// SHA-256 of the uploaded archive; the bytes come from [`StackStore::stack_archive`].
    pub archive_sha256: Option<String>,
    pub project_root: String,
    pub image: Option<String>,
    pub tool: String,
    /// The exact version runs must use, e.g. `1.0.3` (normalised).
    pub tool_version: Option<String>,
    pub tool_path: Option<String>,
    pub labels: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Name → base64 of the value sealed to the pool's public key.
    pub secret_env: BTreeMap<String, String>,
    pub hooks: BTreeMap<String, Vec<String>>,
    /// Tracked and destroy runs apply without waiting for a confirmation.
    pub auto_apply: bool,
    pub state_serial: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What the plan phase reports about a run.
#[derive(Debug, Clone, Default)]
pub struct PlanReport {
    pub commit_sha: Option<String>,
    /// JSON `{add, change, destroy}`.
    pub plan: Option<String>,
    /// JSON array of outputs, sensitive values already masked.
    pub outputs: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StateVersionRecord {
    pub version: i64,
    pub serial: i64,
    pub lineage: String,
    pub resources: i64,
    pub sha256: String,
    pub run_id: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewStateVersion {
    pub serial: i64,
    pub lineage: String,
    pub resources: i64,
    pub sha256: String,
    pub data: Vec<u8>,
    pub run_id: Option<String>,
}

/// A valid run credential for the state backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCredential {
    pub run_id: String,
    pub stack_id: String,
    pub stack_name: String,
    /// A proposed run's: it may GET the state, nothing else.
    pub read_only: bool,
}

/// The answer to a lock or unlock: done, or refused with the current lock's info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockResult {
    Done,
    Held { info: String },
    NotLocked,
}

#[async_trait]
pub trait StackStore: Send + Sync + 'static {
    /// Fails with `Conflict` when the name is taken.
    async fn create_stack(
        &self,
        stack: &StackRecord,
        archive: Option<&[u8]>,
        now: i64,
    ) -> Result<StackRecord>;
    async fn list_stacks(&self) -> Result<Vec<StackRecord>>;
    async fn find_stack(&self, id_or_name: &str) -> Result<Option<StackRecord>>;
    /// Saves every field of `stack` (by ID); a given archive replaces the old one.
    async fn update_stack(
        &self,
        stack: &StackRecord,
        archive: Option<&[u8]>,
        now: i64,
    ) -> Result<StackRecord>;
    /// Refuses (`Conflict`) while a run on the stack has not ended.
    async fn delete_stack(&self, stack_id: &str) -> Result<()>;
    async fn stack_archive(&self, stack_id: &str) -> Result<Option<Vec<u8>>>;

    /// Queues a run on the stack: READY when no other run on the stack is
    /// pending, else QUEUED until the runs before it end.
    async fn insert_stack_run(
        &self,
        stack: &StackRecord,
        run_type: RunType,
        command: &[String],
        now: i64,
    ) -> Result<RunRecord>;
    /// Records the plan phase's findings (fenced by the lease).
    async fn report_plan(
        &self,
        run_id: &str,
        lease_id: &str,
        report: &PlanReport,
        now: i64,
    ) -> Result<RunRecord>;
    /// The plan phase of a tracked run ended: UNCONFIRMED, the lease ends,
    /// the sealed workspace is kept. Fenced by the lease.
    async fn park_unconfirmed(
        &self,
        run_id: &str,
        lease_id: &str,
        log_chunks: u64,
        now: i64,
    ) -> Result<RunRecord>;
    /// Stores the sealed workspace of a leased run (fenced).
    async fn put_workspace(&self, run_id: &str, lease_id: &str, data: &[u8]) -> Result<()>;
    /// The sealed workspace, for the worker holding the run's lease (fenced).
    async fn workspace(&self, run_id: &str, lease_id: &str) -> Result<Option<Vec<u8>>>;
    /// UNCONFIRMED → CONFIRMED, waiting for a worker to apply it.
    async fn confirm_run(&self, run_id: &str, now: i64) -> Result<RunRecord>;
    /// UNCONFIRMED → DISCARDED; the stored workspace is deleted.
    async fn discard_run(&self, run_id: &str, now: i64) -> Result<RunRecord>;

    async fn add_run_credential(
        &self,
        token_hash: &str,
        run_id: &str,
        stack_id: &str,
        lease_id: &str,
        read_only: bool,
        now: i64,
    ) -> Result<()>;
    /// The run a state-backend credential belongs to, and its stack, if it
    /// is valid right now (its run still holds the lease it was made for).
    /// Looked up by the hash alone, before the stack named in the request.
    async fn check_run_credential(&self, token_hash: &str) -> Result<Option<RunCredential>>;
}

/// The Terraform state backend: versions per stack and one lock per stack.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The latest state, if any: (version, bytes).
    async fn current_state(&self, stack_id: &str) -> Result<Option<(StateVersionRecord, Vec<u8>)>>;
    /// Stores a new state version. With `lock_id`, refused (`Conflict`)
    /// unless the stack is locked under that ID; without, refused while locked.
    async fn put_state(
        &self,
        stack_id: &str,
        lock_id: Option<&str>,
        state: &NewStateVersion,
        now: i64,
    ) -> Result<StateVersionRecord>;
    async fn lock_state(
        &self,
        stack_id: &str,
        lock_id: &str,
        info: &str,
        run_id: Option<&str>,
        now: i64,
    ) -> Result<LockResult>;
    /// Unlocks when `lock_id` matches, or always with `force`.
    async fn unlock_state(&self, stack_id: &str, lock_id: &str, force: bool) -> Result<LockResult>;
    async fn state_lock(&self, stack_id: &str) -> Result<Option<String>>;
    /// Stores the state a run's apply produced but Terraform could not save
    /// (its `errored.tfstate`), uploaded by the worker holding `lease_id`.
    /// Refused unless the run still holds that lease (leased or LOST) and
    /// the stack's state lock is free or the run's own; the state must
    /// continue the current one (same lineage, no lower serial). The same
    /// bytes as the current state are a no-op (the save had landed).
    async fn put_recovered_state(
        &self,
        run_id: &str,
        lease_id: &str,
        state: &NewStateVersion,
        now: i64,
    ) -> Result<StateVersionRecord>;
    /// The stack's LOST run, if it has one: the run whose worker was lost
    /// during its apply, which keeps the stack until it comes back.
    async fn lost_run(&self, stack_id: &str) -> Result<Option<crate::RunRecord>>;
    /// An operator gives up on the stack's LOST run: it ends FAILED with
    /// `reason`, which releases its state lock and the stack's queue.
    async fn give_up_lost_run(
        &self,
        stack_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<crate::RunRecord>>;
    async fn state_versions(&self, stack_id: &str) -> Result<Vec<StateVersionRecord>>;
    async fn state_version(
        &self,
        stack_id: &str,
        version: i64,
    ) -> Result<Option<(StateVersionRecord, Vec<u8>)>>;
}
