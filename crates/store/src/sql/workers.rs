use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::runs::LEASED;
use super::{from_json, new_id, to_json, SqlStore};
use crate::{NewSession, NewWorker, Result, SessionRecord, StoreError, WorkerRecord, WorkerStore};

/// Workers per statement in [`SqlStore::touch_workers`].
const TOUCH_BATCH: usize = 500;

const SELECT_WORKER: &str =
    "SELECT w.*, p.name AS pool_name FROM workers w JOIN pools p ON p.id = w.pool_id";

/// A worker's `running` is filled in by [`with_running`].
fn worker_from_row(row: &AnyRow) -> WorkerRecord {
    let tags: String = row.get("tags");
    WorkerRecord {
        id: row.get("id"),
        pool_id: row.get("pool_id"),
        pool_name: row.get("pool_name"),
        version: row.get("version"),
        hostname: row.get("hostname"),
        tags: from_json(&tags),
        max_concurrent_runs: row.get::<i64, _>("max_concurrent_runs") as u32,
        drain: row.get::<i64, _>("drain") != 0,
        registered_at: row.get("registered_at"),
        last_seen: row.get("last_seen"),
        gone_at: row.get("gone_at"),
        running: Vec::new(),
    }
}

/// Fills in the runs each worker holds a lease on, in one query for all.
async fn with_running(pool: &AnyPool, mut workers: Vec<WorkerRecord>) -> Result<Vec<WorkerRecord>> {
    if workers.is_empty() {
        return Ok(workers);
    }
    let leased: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT worker_id, id FROM runs WHERE state IN {LEASED} AND worker_id IS NOT NULL ORDER BY seq"
    ))
    .fetch_all(pool)
    .await?;
    let mut by_worker: HashMap<String, Vec<String>> = HashMap::new();
    for (worker_id, run_id) in leased {
        by_worker.entry(worker_id).or_default().push(run_id);
    }
    for worker in &mut workers {
        worker.running = by_worker.remove(&worker.id).unwrap_or_default();
    }
    Ok(workers)
}

pub(super) async fn worker_by_id(pool: &AnyPool, worker_id: &str) -> Result<Option<WorkerRecord>> {
    let row = sqlx::query(&format!("{SELECT_WORKER} WHERE w.id = $1"))
        .bind(worker_id)
        .fetch_optional(pool)
        .await?;
    let workers = with_running(pool, row.iter().map(worker_from_row).collect()).await?;
    Ok(workers.into_iter().next())
}

#[async_trait]
impl WorkerStore for SqlStore {
    async fn use_nonce(&self, nonce: &str, expires_at: i64) -> Result<bool> {
        let inserted = sqlx::query("INSERT INTO registration_nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(nonce)
            .bind(expires_at)
            .execute(&self.writer)
            .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn purge_expired(&self, now: i64) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let nonces = sqlx::query("DELETE FROM registration_nonces WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let sessions = sqlx::query("DELETE FROM worker_sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(nonces.rows_affected() + sessions.rows_affected())
    }

    async fn register_worker(
        &self,
        worker: &NewWorker,
        session: &NewSession,
        now: i64,
    ) -> Result<WorkerRecord> {
        let id = if session.worker_id.is_empty() {
            new_id()
        } else {
            session.worker_id.clone()
        };
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO workers (id, pool_id, pool_generation, version, hostname, tags, max_concurrent_runs, registered_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&worker.pool_id)
        .bind(worker.pool_generation)
        .bind(&worker.version)
        .bind(&worker.hostname)
        .bind(to_json(&worker.tags))
        .bind(worker.max_concurrent_runs as i64)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO worker_sessions (token_hash, worker_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(&session.token_hash)
        .bind(&id)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        worker_by_id(&self.writer, &id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("worker {id}")))
    }

    async fn resume_worker(
        &self,
        worker: &NewWorker,
        session: &NewSession,
        now: i64,
    ) -> Result<Option<WorkerRecord>> {
        let mut tx = self.writer.begin().await?;
        let resumed = sqlx::query(
            "UPDATE workers SET version = $1, hostname = $2, tags = $3, max_concurrent_runs = $4, last_seen = $5
             WHERE id = $6 AND pool_id = $7 AND pool_generation = $8 AND gone_at IS NULL",
        )
        .bind(&worker.version)
        .bind(&worker.hostname)
        .bind(to_json(&worker.tags))
        .bind(worker.max_concurrent_runs as i64)
        .bind(now)
        .bind(&session.worker_id)
        .bind(&worker.pool_id)
        .bind(worker.pool_generation)
        .execute(&mut *tx)
        .await?;
        if resumed.rows_affected() == 0 {
            return Ok(None);
        }
        insert_session(&mut tx, session).await?;
        tx.commit().await?;
        worker_by_id(&self.writer, &session.worker_id).await
    }

    async fn add_session(&self, session: &NewSession, now: i64) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM worker_sessions WHERE worker_id = $1 AND expires_at < $2")
            .bind(&session.worker_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_session(&mut tx, session).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_session(&self, token_hash: &str, now: i64) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT s.worker_id, s.expires_at, w.pool_id, w.drain, w.registered_at, p.cycled_at
             FROM worker_sessions s
             JOIN workers w ON w.id = s.worker_id
             JOIN pools p ON p.id = w.pool_id
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND w.gone_at IS NULL AND w.pool_generation = p.generation",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|row| SessionRecord {
            worker_id: row.get("worker_id"),
            pool_id: row.get("pool_id"),
            drain: row.get::<i64, _>("drain") != 0,
            registered_at: row.get("registered_at"),
            pool_cycled_at: row.get("cycled_at"),
            expires_at: row.get("expires_at"),
        }))
    }

    async fn touch_workers(&self, heard: &[(String, i64)]) -> Result<()> {
        // Sorted, so that two replicas' batches never wait on each other;
        // in statements of a bounded number of parameters (both engines
        // cap them). Both name a VALUES list's columns column1, column2.
        let mut heard: Vec<&(String, i64)> = heard.iter().collect();
        heard.sort();
        let mut tx = self.writer.begin().await?;
        for batch in heard.chunks(TOUCH_BATCH) {
            let rows: Vec<String> = (0..batch.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "UPDATE workers SET last_seen = v.column2 FROM (VALUES {}) AS v
                 WHERE workers.id = v.column1 AND workers.last_seen < v.column2",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (id, at) in batch {
                query = query.bind(id.as_str()).bind(*at);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_worker_drain(&self, worker_id: &str, drain: bool) -> Result<WorkerRecord> {
        let updated =
            sqlx::query("UPDATE workers SET drain = $1 WHERE id = $2 AND gone_at IS NULL")
                .bind(drain as i64)
                .bind(worker_id)
                .execute(&self.writer)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("worker {worker_id}")));
        }
        worker_by_id(&self.writer, worker_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("worker {worker_id}")))
    }

    async fn deregister_worker(&self, worker_id: &str, now: i64) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("UPDATE workers SET gone_at = $1, last_seen = $2 WHERE id = $3")
            .bind(now)
            .bind(now)
            .bind(worker_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM worker_sessions WHERE worker_id = $1")
            .bind(worker_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_worker(&self, worker_id: &str) -> Result<Option<WorkerRecord>> {
        worker_by_id(&self.reader, worker_id).await
    }

    async fn list_workers(
        &self,
        pool_id: Option<&str>,
        include_gone: bool,
    ) -> Result<Vec<WorkerRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT_WORKER} WHERE ($1 IS NULL OR w.pool_id = $1) AND ($2 OR w.gone_at IS NULL) ORDER BY w.registered_at"
        ))
        .bind(pool_id)
        .bind(include_gone)
        .fetch_all(&self.reader)
        .await?;
        with_running(&self.reader, rows.iter().map(worker_from_row).collect()).await
    }
}

/// Stores a worker's session (its token's hash only).
async fn insert_session(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    session: &NewSession,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO worker_sessions (token_hash, worker_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(&session.token_hash)
    .bind(&session.worker_id)
    .bind(session.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
