use async_trait::async_trait;
use sqlx::Row;

use super::runs::HELD;
use super::workers::worker_by_id;
use super::{from_json, lock, SqlStore};
use crate::{
    DemandStore, DrainIfIdleRecord, PoolDemandRecord, Result, StoreError, WorkerDemandRecord,
};

#[async_trait]
impl DemandStore for SqlStore {
    async fn pool_demand(&self, pool_id: Option<&str>) -> Result<Vec<PoolDemandRecord>> {
        // One read transaction: the counts and the workers are one snapshot.
        let mut tx = self.reader.begin().await?;
        lock::one_snapshot(&mut tx).await?;
        // The same predicate as claim_runs' claimable run.
        let pools = sqlx::query(
            "SELECT p.id, p.name,
                (SELECT COUNT(*) FROM runs r WHERE r.pool_id = p.id
                   AND r.state IN ('READY', 'CONFIRMED') AND r.lease_id IS NULL) AS pending
             FROM pools p WHERE ($1 IS NULL OR p.id = $1) ORDER BY p.name",
        )
        .bind(pool_id)
        .fetch_all(&mut *tx)
        .await?;
        let workers = sqlx::query(&format!(
            "SELECT w.id, w.pool_id, w.tags, w.drain, w.max_concurrent_runs, w.registered_at, w.last_seen,
                (SELECT COUNT(*) FROM runs r WHERE r.worker_id = w.id AND r.state IN {HELD}) AS running,
                (SELECT CASE WHEN MAX(r.updated_at) > w.registered_at THEN MAX(r.updated_at)
                        ELSE w.registered_at END
                   FROM runs r WHERE r.worker_id = w.id) AS idle_since
             FROM workers w
             WHERE ($1 IS NULL OR w.pool_id = $1) AND w.gone_at IS NULL
             ORDER BY w.registered_at, w.id"
        ))
        .bind(pool_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut demand: Vec<PoolDemandRecord> = pools
            .iter()
            .map(|row| PoolDemandRecord {
                pool_id: row.get("id"),
                pool_name: row.get("name"),
                runs_pending: row.get::<i64, _>("pending").max(0) as u64,
                workers: Vec::new(),
            })
            .collect();
        for row in &workers {
            let pool: String = row.get("pool_id");
            let Some(entry) = demand.iter_mut().find(|p| p.pool_id == pool) else {
                continue;
            };
            let tags: String = row.get("tags");
            entry.workers.push(WorkerDemandRecord {
                id: row.get("id"),
                tags: from_json(&tags),
                drain: row.get::<i64, _>("drain") != 0,
                max_concurrent_runs: row.get::<i64, _>("max_concurrent_runs").max(0) as u32,
                running: row.get::<i64, _>("running").max(0) as u32,
                registered_at: row.get("registered_at"),
                last_seen: row.get("last_seen"),
                idle_since: row.get("idle_since"),
            });
        }
        Ok(demand)
    }

    async fn drain_worker_if_idle(&self, worker_id: &str) -> Result<DrainIfIdleRecord> {
        // SQLite: on the single writer, claim_runs cannot interleave, and it
        // checks the drain flag in its own UPDATE. PostgreSQL: the worker's
        // row lock orders this against a claim (`lock::worker_shared`), and
        // the look at its runs below is a statement of its own, taken after
        // the lock: it sees a claim that committed first.
        let mut tx = self.writer.begin().await?;
        lock::worker(&mut tx, worker_id).await?;
        let drained = sqlx::query(&format!(
            "UPDATE workers SET drain = 1
             WHERE id = $1 AND gone_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.worker_id = $1 AND r.state IN {HELD})"
        ))
        .bind(worker_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        tx.commit().await?;
        let worker = worker_by_id(&self.writer, worker_id)
            .await?
            .filter(|w| w.gone_at.is_none())
            .ok_or_else(|| StoreError::NotFound(format!("worker {worker_id}")))?;
        Ok(DrainIfIdleRecord { drained, worker })
    }
}
