//! The Terraform state backend's storage: versions and the lock.

use async_trait::async_trait;
use gantry_pki::at_rest::SecretsKeyring;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::at_rest::STATE;
use super::runs::{end_run_in_tx, run_by_id, run_from_row, HELD};
use super::{lock, SqlStore};
use crate::{
    LockResult, NewStateVersion, Result, RunRecord, StateStore, StateVersionRecord, StoreError,
};

fn version_from_row(row: &AnyRow) -> StateVersionRecord {
    StateVersionRecord {
        version: row.get("version"),
        serial: row.get("serial"),
        lineage: row.get("lineage"),
        resources: row.get("resources"),
        sha256: row.get("sha256"),
        run_id: row.get("run_id"),
        created_at: row.get("created_at"),
    }
}

impl SqlStore {
    /// A version row with its state, decrypted.
    fn version_with_data(
        &self,
        stack_id: &str,
        row: &AnyRow,
    ) -> Result<(StateVersionRecord, Vec<u8>)> {
        let record = version_from_row(row);
        let context = STATE.context(&[stack_id, &record.version.to_string()]);
        let data = STATE.open_blob(&self.keyring, &context, row.get("data"))?;
        Ok((record, data))
    }
}

/// Inserts the stack's next state version, encrypted at rest.
async fn insert_version(
    tx: &mut Transaction<'_, Any>,
    keyring: &SecretsKeyring,
    stack_id: &str,
    state: &NewStateVersion,
    now: i64,
) -> Result<StateVersionRecord> {
    // The caller holds the stack's lock (or SQLite's single writer), which
    // makes this read-then-insert race-free; the version is needed up front
    // because the ciphertext is bound to it.
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM state_versions WHERE stack_id = $1",
    )
    .bind(stack_id)
    .fetch_one(&mut **tx)
    .await?;
    let context = STATE.context(&[stack_id, &version.to_string()]);
    let row = sqlx::query(
            "INSERT INTO state_versions (stack_id, version, serial, lineage, resources, sha256, data, run_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             RETURNING *",
        )
        .bind(stack_id)
        .bind(version)
        .bind(state.serial)
        .bind(&state.lineage)
        .bind(state.resources)
        .bind(&state.sha256)
        .bind(STATE.seal_blob(keyring, &context, &state.data))
        .bind(&state.run_id)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
    Ok(version_from_row(&row))
}

#[async_trait]
impl StateStore for SqlStore {
    async fn current_state(&self, stack_id: &str) -> Result<Option<(StateVersionRecord, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT * FROM state_versions WHERE stack_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(stack_id)
        .fetch_optional(&self.writer)
        .await?;
        row.map(|r| self.version_with_data(stack_id, &r))
            .transpose()
    }

    async fn put_state(
        &self,
        stack_id: &str,
        lock_id: Option<&str>,
        state: &NewStateVersion,
        now: i64,
    ) -> Result<StateVersionRecord> {
        let mut tx = self.writer.begin().await?;
        lock::stack(&mut tx, stack_id).await?;
        let held: Option<String> =
            sqlx::query_scalar("SELECT lock_id FROM state_locks WHERE stack_id = $1")
                .bind(stack_id)
                .fetch_optional(&mut *tx)
                .await?;
        match (held.as_deref(), lock_id) {
            (None, None) => {}
            (Some(held), Some(given)) if held == given => {}
            (Some(held), _) => {
                return Err(StoreError::Conflict(format!(
                    "the state is locked (lock {held}); only its holder may write it"
                )))
            }
            (None, Some(given)) => {
                return Err(StoreError::Conflict(format!(
                    "the state is not locked under {given}; lock it first"
                )))
            }
        }
        let version = insert_version(&mut tx, &self.keyring, stack_id, state, now).await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn lock_state(
        &self,
        stack_id: &str,
        lock_id: &str,
        info: &str,
        run_id: Option<&str>,
        now: i64,
    ) -> Result<LockResult> {
        let mut tx = self.writer.begin().await?;
        lock::stack(&mut tx, stack_id).await?;
        let inserted = sqlx::query(
            "INSERT INTO state_locks (stack_id, lock_id, info, run_id, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (stack_id) DO NOTHING",
        )
        .bind(stack_id)
        .bind(lock_id)
        .bind(info)
        .bind(run_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(LockResult::Done);
        }
        let info: String = sqlx::query_scalar("SELECT info FROM state_locks WHERE stack_id = $1")
            .bind(stack_id)
            .fetch_one(&mut *tx)
            .await?;
        Ok(LockResult::Held { info })
    }

    async fn unlock_state(&self, stack_id: &str, lock_id: &str, force: bool) -> Result<LockResult> {
        let mut tx = self.writer.begin().await?;
        lock::stack(&mut tx, stack_id).await?;
        let held: Option<(String, String)> =
            sqlx::query_as("SELECT lock_id, info FROM state_locks WHERE stack_id = $1")
                .bind(stack_id)
                .fetch_optional(&mut *tx)
                .await?;
        match held {
            None => Ok(LockResult::NotLocked),
            Some((held, info)) if held != lock_id && !force => Ok(LockResult::Held { info }),
            Some(_) => {
                sqlx::query("DELETE FROM state_locks WHERE stack_id = $1")
                    .bind(stack_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(LockResult::Done)
            }
        }
    }

    async fn state_lock(&self, stack_id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT info FROM state_locks WHERE stack_id = $1")
                .bind(stack_id)
                .fetch_optional(&self.writer)
                .await?,
        )
    }

    async fn put_recovered_state(
        &self,
        run_id: &str,
        lease_id: &str,
        state: &NewStateVersion,
        now: i64,
    ) -> Result<StateVersionRecord> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let stack_id: Option<Option<String>> = sqlx::query_scalar(&format!(
            "SELECT stack_id FROM runs WHERE id = $1 AND lease_id = $2 AND state IN {HELD}"
        ))
        .bind(run_id)
        .bind(lease_id)
        .fetch_optional(&mut *tx)
        .await?;
        let stack_id = match stack_id {
            Some(Some(stack_id)) => stack_id,
            Some(None) => {
                return Err(StoreError::Conflict(format!(
                    "run {run_id} is not a stack run: it has no state"
                )))
            }
            None => return Err(super::runs::fenced_error(&mut tx, run_id).await),
        };
        lock::stack(&mut tx, &stack_id).await?;
        let lock: Option<Option<String>> =
            sqlx::query_scalar("SELECT run_id FROM state_locks WHERE stack_id = $1")
                .bind(&stack_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(holder) = lock {
            if holder.as_deref() != Some(run_id) {
                return Err(StoreError::Conflict(
                    "the stack's state is locked by someone else; this run's state was not stored"
                        .into(),
                ));
            }
        }
        let current = sqlx::query(
            "SELECT version, serial, lineage, resources, sha256, run_id, created_at
             FROM state_versions WHERE stack_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(&stack_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| version_from_row(&row));
        if let Some(current) = &current {
            if current.sha256 == state.sha256 {
                return Ok(current.clone());
            }
            if current.lineage != state.lineage || state.serial < current.serial {
                return Err(StoreError::Conflict(format!(
                    "the uploaded state (serial {}, lineage {}) does not continue the stack's current state \
                     (serial {}, lineage {})",
                    state.serial, state.lineage, current.serial, current.lineage
                )));
            }
        }
        let version = insert_version(&mut tx, &self.keyring, &stack_id, state, now).await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn lost_run(&self, stack_id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE stack_id = $1 AND state = 'LOST'")
            .bind(stack_id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.as_ref().map(run_from_row))
    }

    async fn give_up_lost_run(
        &self,
        stack_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<RunRecord>> {
        let mut tx = self.writer.begin().await?;
        lock::runs_where(&mut tx, "stack_id = $1 AND state = 'LOST'", stack_id).await?;
        let run_id: Option<String> =
            sqlx::query_scalar("SELECT id FROM runs WHERE stack_id = $1 AND state = 'LOST'")
                .bind(stack_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(run_id) = run_id else {
            return Ok(None);
        };
        end_run_in_tx(&mut tx, &run_id, "FAILED", None, Some(reason), now).await?;
        let record = run_by_id(&mut tx, &run_id).await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn state_versions(&self, stack_id: &str) -> Result<Vec<StateVersionRecord>> {
        let rows = sqlx::query(
            "SELECT version, serial, lineage, resources, sha256, run_id, created_at
             FROM state_versions WHERE stack_id = $1 ORDER BY version",
        )
        .bind(stack_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(version_from_row).collect())
    }

    async fn state_version(
        &self,
        stack_id: &str,
        version: i64,
    ) -> Result<Option<(StateVersionRecord, Vec<u8>)>> {
        let row = sqlx::query("SELECT * FROM state_versions WHERE stack_id = $1 AND version = $2")
            .bind(stack_id)
            .bind(version)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| self.version_with_data(stack_id, &r))
            .transpose()
    }
}
