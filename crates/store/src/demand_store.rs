//! Demand on worker pools: what Prometheus gauges and the autoscaler read,
//! and the one atomic step scale-in needs.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{Result, WorkerRecord};

/// One pool's demand, read in one snapshot.
#[derive(Debug, Clone)]
pub struct PoolDemandRecord {
    pub pool_id: String,
    pub pool_name: String,
    /// Runs a worker of the pool could take now: exactly what `claim_runs`
    /// would claim (READY, or CONFIRMED waiting for its apply, unleased).
    /// Not UNCONFIRMED runs (waiting for a person), not runs QUEUED behind
    /// another run on their stack.
    pub runs_pending: u64,
    /// The pool's registered workers that have not deregistered.
    pub workers: Vec<WorkerDemandRecord>,
}

#[derive(Debug, Clone)]
pub struct WorkerDemandRecord {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    pub drain: bool,
    pub max_concurrent_runs: u32,
    /// How many runs it holds a lease on (LOST runs included: their worker
    /// may come back to finish the apply).
    pub running: u32,
    pub registered_at: i64,
    pub last_seen: i64,
    /// When it last became idle: the later of its registration and the last
    /// change of a run it held. Meaningless while `running > 0`.
    pub idle_since: i64,
}

/// The answer to [`DemandStore::drain_worker_if_idle`].
#[derive(Debug, Clone)]
pub struct DrainIfIdleRecord {
    /// True when the worker held no run and is now drained (or already was).
    pub drained: bool,
    /// The worker as it is after the operation; `running` names the runs
    /// it holds when `drained` is false.
    pub worker: WorkerRecord,
}

#[async_trait]
pub trait DemandStore: Send + Sync + 'static {
    /// Demand on one pool, or on every pool when `pool_id` is `None`, by
    /// pool name. One consistent read.
    async fn pool_demand(&self, pool_id: Option<&str>) -> Result<Vec<PoolDemandRecord>>;
    /// Drains the worker only if it holds no run, in one transaction: a
    /// run cannot be claimed between the look and the drain, and
    /// `claim_runs` never gives a drained worker a run afterwards. A busy
    /// worker is left as it was. `NotFound` for an unknown or gone worker.
    async fn drain_worker_if_idle(&self, worker_id: &str) -> Result<DrainIfIdleRecord>;
}
