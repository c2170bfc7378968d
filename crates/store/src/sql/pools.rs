use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::runs::TERMINAL;
use super::{lock, new_id, SqlStore};
use crate::{
    NewPool, PoolKey, PoolRecord, PoolReset, PoolStore, Result, SealedToPool, StackStore,
    StoreError,
};

/// Runs holding a stored workspace that has not been applied yet.
const AWAITING_APPLY: &str = "('UNCONFIRMED','CONFIRMED')";

const SELECT_POOL: &str = "
    SELECT p.*,
        (SELECT COUNT(*) FROM workers w WHERE w.pool_id = p.id AND w.gone_at IS NULL) AS worker_count,
        (SELECT COUNT(*) FROM runs r WHERE r.pool_id = p.id AND r.state IN ('QUEUED', 'READY')) AS queued_count
    FROM pools p";

fn pool_from_row(row: &AnyRow) -> PoolRecord {
    PoolRecord {
        id: row.get("id"),
        name: row.get("name"),
        description: row.get("description"),
        key: PoolKey {
            public_key_pem: row.get("public_key_pem"),
            key_fingerprint: row.get("key_fingerprint"),
            credential_hash: row.get("credential_hash"),
        },
        generation: row.get("generation"),
        cycled_at: row.get("cycled_at"),
        created_at: row.get("created_at"),
        workers: row.get("worker_count"),
        queued_runs: row.get("queued_count"),
    }
}

impl SqlStore {
    async fn pool_by_id(&self, pool_id: &str) -> Result<PoolRecord> {
        // Read through the writer so a caller sees its own write at once.
        let row = sqlx::query(&format!("{SELECT_POOL} WHERE p.id = $1"))
            .bind(pool_id)
            .fetch_optional(&self.writer)
            .await?;
        row.map(|r| pool_from_row(&r))
            .ok_or_else(|| StoreError::NotFound(format!("pool {pool_id}")))
    }
}

#[async_trait]
impl PoolStore for SqlStore {
    async fn create_pool(&self, pool: &NewPool, now: i64) -> Result<PoolRecord> {
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO pools (id, name, description, public_key_pem, key_fingerprint, credential_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&id)
        .bind(&pool.name)
        .bind(&pool.description)
        .bind(&pool.key.public_key_pem)
        .bind(&pool.key.key_fingerprint)
        .bind(&pool.key.credential_hash)
        .bind(now)
        .execute(&self.writer)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "a pool named {:?} already exists",
                pool.name
            )));
        }
        self.pool_by_id(&id).await
    }

    async fn list_pools(&self) -> Result<Vec<PoolRecord>> {
        let rows = sqlx::query(&format!("{SELECT_POOL} ORDER BY p.name"))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(pool_from_row).collect())
    }

    async fn find_pool(&self, id_or_name: &str) -> Result<Option<PoolRecord>> {
        let row = sqlx::query(&format!("{SELECT_POOL} WHERE p.id = $1 OR p.name = $1"))
            .bind(id_or_name)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| pool_from_row(&r)))
    }

    async fn sealed_to_pool(&self, pool_id: &str) -> Result<Vec<SealedToPool>> {
        let stacks = sqlx::query_as::<_, (String,)>(
            "SELECT id FROM stacks WHERE pool_id = $1 ORDER BY name",
        )
        .bind(pool_id)
        .fetch_all(&self.reader)
        .await?;
        let mut sealed = Vec::new();
        for (stack_id,) in stacks {
            let Some(stack) = self.find_stack(&stack_id).await? else {
                continue; // deleted meanwhile
            };
            let runs: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT r.id FROM runs r JOIN run_workspaces w ON w.run_id = r.id
                 WHERE r.stack_id = $1 AND r.state IN {AWAITING_APPLY} ORDER BY r.seq"
            ))
            .bind(&stack_id)
            .fetch_all(&self.reader)
            .await?;
            if stack.secret_env.is_empty() && runs.is_empty() {
                continue;
            }
            sealed.push(SealedToPool {
                stack_id,
                stack_name: stack.name,
                secret_env: stack.secret_env.into_keys().collect(),
                runs,
            });
        }
        Ok(sealed)
    }

    async fn reset_pool(&self, pool_id: &str, key: &PoolKey, now: i64) -> Result<PoolReset> {
        let mut tx = self.writer.begin().await?;
        lock::pool(&mut tx, pool_id).await?;
        lock::runs_where(
            &mut tx,
            &format!("pool_id = $1 AND state NOT IN {TERMINAL}"),
            pool_id,
        )
        .await?;
        let old_fingerprint: Option<String> =
            sqlx::query_scalar("SELECT key_fingerprint FROM pools WHERE id = $1")
                .bind(pool_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(old_fingerprint) = old_fingerprint else {
            return Err(StoreError::NotFound(format!("pool {pool_id}")));
        };
        let mut discarded = Vec::new();
        if old_fingerprint != key.key_fingerprint {
            // Their plans are sealed to the old key: no worker of the pool
            // can open them any more.
            let runs: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT r.id FROM runs r JOIN run_workspaces w ON w.run_id = r.id
                 JOIN stacks s ON s.id = r.stack_id
                 WHERE s.pool_id = $1 AND r.state IN {AWAITING_APPLY} ORDER BY r.seq"
            ))
            .bind(pool_id)
            .fetch_all(&mut *tx)
            .await?;
            for run_id in runs {
                super::runs::end_run_in_tx(
                    &mut tx,
                    &run_id,
                    "DISCARDED",
                    None,
                    Some(
                        "discarded: the pool was reset to a new key, and the run's stored plan was sealed to the old one, \
                         so no worker can open it; trigger the run again",
                    ),
                    now,
                )
                .await?;
                discarded.push(run_id);
            }
        }
        let updated = sqlx::query(
            "UPDATE pools SET public_key_pem = $1, key_fingerprint = $2, credential_hash = $3, generation = generation + 1
             WHERE id = $4",
        )
        .bind(&key.public_key_pem)
        .bind(&key.key_fingerprint)
        .bind(&key.credential_hash)
        .bind(pool_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("pool {pool_id}")));
        }
        sqlx::query("DELETE FROM worker_sessions WHERE worker_id IN (SELECT id FROM workers WHERE pool_id = $1)")
            .bind(pool_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PoolReset {
            pool: self.pool_by_id(pool_id).await?,
            discarded,
        })
    }

    async fn cycle_pool(&self, pool_id: &str, now: i64) -> Result<PoolRecord> {
        let updated = sqlx::query("UPDATE pools SET cycled_at = $1 WHERE id = $2")
            .bind(now)
            .bind(pool_id)
            .execute(&self.writer)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("pool {pool_id}")));
        }
        self.pool_by_id(pool_id).await
    }

    async fn delete_pool(&self, pool_id: &str, force: bool, now: i64) -> Result<Vec<String>> {
        let mut tx = self.writer.begin().await?;
        lock::pool(&mut tx, pool_id).await?;
        lock::runs_where(
            &mut tx,
            &format!("pool_id = $1 AND state NOT IN {TERMINAL}"),
            pool_id,
        )
        .await?;
        // Refused whatever `force` says: a stack holds its state history and
        // secrets, which deleting the pool must not take with it.
        let stacks: Vec<String> =
            sqlx::query_scalar("SELECT name FROM stacks WHERE pool_id = $1 ORDER BY name")
                .bind(pool_id)
                .fetch_all(&mut *tx)
                .await?;
        if !stacks.is_empty() {
            return Err(StoreError::Conflict(format!(
                "the pool still has {} stack(s): {}; delete them (`gantry stack delete`) or move them to another pool \
                 (`gantry stack update --pool`) first; --force does not delete stacks",
                stacks.len(),
                stacks.join(", ")
            )));
        }
        let pending: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, state FROM runs WHERE pool_id = $1 AND state NOT IN ('FINISHED','FAILED','STOPPED','DISCARDED','CANCELED')",
        )
        .bind(pool_id)
        .fetch_all(&mut *tx)
        .await?;
        if !pending.is_empty() && !force {
            return Err(StoreError::Conflict(format!(
                "the pool has {} run(s) not yet ended; stop them first, or delete with --force to cancel them",
                pending.len()
            )));
        }
        let mut ended = Vec::new();
        for (run_id, state) in pending {
            let end = if state == "QUEUED" || state == "READY" {
                "CANCELED"
            } else {
                "FAILED"
            };
            super::runs::end_run_in_tx(
                &mut tx,
                &run_id,
                end,
                None,
                Some("the pool was deleted"),
                now,
            )
            .await?;
            ended.push(run_id);
        }
        let deleted = sqlx::query("DELETE FROM pools WHERE id = $1")
            .bind(pool_id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("pool {pool_id}")));
        }
        tx.commit().await?;
        Ok(ended)
    }
}
