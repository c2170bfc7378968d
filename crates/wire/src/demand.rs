//! Demand on a worker pool, for autoscalers: `GET /api/v1/pools/{pool}/demand`
//! and `POST /api/v1/workers/{worker}/drain-if-idle`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::pool::{Worker, WorkerState};

/// `GET /api/v1/pools/{pool}/demand`: the same counts as the pool gauges
/// of `/metrics`, and every live worker with what an autoscaler needs to
/// pick one to remove.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolDemand {
    pub pool_id: String,
    /// The pool's name.
    pub pool: String,
    /// Runs a worker could take now: READY (or CONFIRMED, waiting for its
    /// apply) and not leased. Not UNCONFIRMED runs, not runs QUEUED behind
    /// another run on their stack.
    pub runs_pending: u64,
    /// Live workers: registered, not gone, heard from within the lease timeout.
    pub workers: u64,
    /// Live workers holding at least one run, drained or not.
    pub workers_busy: u64,
    /// Live workers that take no new runs. Not capacity.
    pub workers_drained: u64,
    /// Every live worker, oldest registration first.
    pub worker_list: Vec<WorkerDemand>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerDemand {
    pub id: String,
    /// `idle`, `busy` or `drained` (a drained worker may still hold runs).
    pub state: WorkerState,
    /// From `GANTRY_METADATA_instance_id`: the machine the worker runs on.
    pub instance_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Runs it holds a lease on.
    pub running: u32,
    pub max_concurrent_runs: u32,
    pub registered_at: String,
    /// When it last became idle (unset while it holds a run).
    pub idle_since: Option<String>,
    /// Milliseconds it has been idle, by the control plane's clock (0 while busy).
    pub idle_for_ms: u64,
}

/// The answer to `POST /api/v1/workers/{worker}/drain-if-idle`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrainIfIdle {
    /// True when the worker held no run and is now drained: the claim path
    /// will never give it a run. False when it holds runs (`worker.running`);
    /// it was then left as it was.
    pub drained: bool,
    pub worker: Worker,
}
