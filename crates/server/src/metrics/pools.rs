//! Demand on pools, from the store at the time it is asked: the pool gauges
//! of `/metrics` and `GET /pools/{pool}/demand` count the same way.

use gantry_store::PoolDemandRecord;
use gantry_wire::demand::{PoolDemand, WorkerDemand};
use gantry_wire::pool::WorkerState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::convert::timestamp;
use crate::error::ApiResult;
use crate::state::{now_ms, AppState};

/// The tag a launcher gets from `GANTRY_METADATA_instance_id`.
pub const INSTANCE_ID_TAG: &str = "instance_id";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    worker_pool_id: String,
    worker_pool_name: String,
}

/// Demand on every pool (`pool_id: None`) or one, with only live workers:
/// not gone, and heard from within the lease timeout (a worker silent
/// longer is lost, and its runs are being failed).
pub async fn demand(state: &AppState, pool_id: Option<&str>) -> ApiResult<Vec<PoolDemand>> {
    let now = now_ms();
    let lease_ms = state.config.lease_timeout.as_millis() as i64;
    let records = state.store.pool_demand(pool_id).await?;
    Ok(records
        .into_iter()
        .map(|record| summarize(record, now, lease_ms))
        .collect())
}

fn summarize(record: PoolDemandRecord, now: i64, lease_ms: i64) -> PoolDemand {
    let worker_list: Vec<WorkerDemand> = record
        .workers
        .into_iter()
        .filter(|w| now - w.last_seen <= lease_ms)
        .map(|w| {
            let state = if w.drain {
                WorkerState::Drained
            } else if w.running > 0 {
                WorkerState::Busy
            } else {
                WorkerState::Idle
            };
            let idle = w.running == 0;
            WorkerDemand {
                id: w.id,
                state,
                instance_id: w.tags.get(INSTANCE_ID_TAG).cloned(),
                tags: w.tags,
                running: w.running,
                max_concurrent_runs: w.max_concurrent_runs,
                registered_at: timestamp(w.registered_at),
                idle_since: idle.then(|| timestamp(w.idle_since)),
                idle_for_ms: if idle {
                    (now - w.idle_since).max(0) as u64
                } else {
                    0
                },
            }
        })
        .collect();
    PoolDemand {
        pool_id: record.pool_id,
        pool: record.pool_name,
        runs_pending: record.runs_pending,
        workers: worker_list.len() as u64,
        workers_busy: worker_list.iter().filter(|w| w.running > 0).count() as u64,
        workers_drained: worker_list
            .iter()
            .filter(|w| w.state == WorkerState::Drained)
            .count() as u64,
        worker_list,
    }
}

pub async fn summaries(state: &AppState) -> ApiResult<Vec<PoolDemand>> {
    demand(state, None).await
}

/// The pool gauges, named as the seed product's exporter names them so
/// that its dashboards and KEDA rules port.
pub fn register(registry: &mut Registry, pools: &[PoolDemand]) {
    type Gauged = (&'static str, &'static str, fn(&PoolDemand) -> u64);
    let gauges: [Gauged; 4] = [
        (
            "gantry_worker_pool_runs_pending",
            "Runs a worker of the pool could take now: READY (or CONFIRMED) and unleased; not UNCONFIRMED, not QUEUED behind another run on their stack",
            |p| p.runs_pending,
        ),
        (
            "gantry_worker_pool_workers",
            "Live workers of the pool (drained ones included; see gantry_worker_pool_workers_drained)",
            |p| p.workers,
        ),
        (
            "gantry_worker_pool_workers_busy",
            "Live workers of the pool holding at least one run",
            |p| p.workers_busy,
        ),
        (
            "gantry_worker_pool_workers_drained",
            "Live workers of the pool that take no new runs: not capacity",
            |p| p.workers_drained,
        ),
    ];
    for (name, help, value) in gauges {
        let family = Family::<PoolLabels, Gauge>::default();
        for pool in pools {
            family
                .get_or_create(&PoolLabels {
                    worker_pool_id: pool.pool_id.clone(),
                    worker_pool_name: pool.pool.clone(),
                })
                .set(value(pool) as i64);
        }
        registry.register(name, help, family);
    }
}
