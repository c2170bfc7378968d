use std::collections::BTreeMap;

use async_trait::async_trait;
use gantry_pki::at_rest::SecretsKeyring;
use gantry_wire::run::{RunState, RunType};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::at_rest::{SECRET_ENV, WORKSPACE};
use super::runs::{fenced_error, record_transition, run_by_id, HELD, TERMINAL};
use super::{from_json, lock, new_id, to_json, SqlStore};
use crate::{PlanReport, Result, RunCredential, RunRecord, StackRecord, StackStore, StoreError};

const SELECT_STACK: &str = "
    SELECT s.id, s.name, s.pool_id, p.name AS pool_name, s.git_url, s.git_ref, s.archive_sha256,
        s.project_root, s.image, s.tool, s.tool_version, s.tool_path, s.labels, s.env, s.secret_env, s.hooks,
        s.auto_apply,
        s.created_at, s.updated_at,
        (SELECT serial FROM state_versions v WHERE v.stack_id = s.id ORDER BY version DESC LIMIT 1) AS state_serial
    FROM stacks s JOIN pools p ON p.id = s.pool_id";

fn stack_from_row(row: &AnyRow, keyring: &SecretsKeyring) -> Result<StackRecord> {
    let id: String = row.get("id");
    let secret_env =
        SECRET_ENV.open_text(keyring, &SECRET_ENV.context(&[&id]), row.get("secret_env"))?;
    Ok(StackRecord {
        id,
        name: row.get("name"),
        pool_id: row.get("pool_id"),
        pool_name: row.get("pool_name"),
        git_url: row.get("git_url"),
        git_ref: row.get("git_ref"),
        archive_sha256: row.get("archive_sha256"),
        project_root: row.get("project_root"),
        image: row.get("image"),
        tool: row.get("tool"),
        tool_version: row.get("tool_version"),
        tool_path: row.get("tool_path"),
        labels: from_json(row.get("labels")),
        env: from_json(row.get("env")),
        secret_env: from_json(&secret_env),
        hooks: from_json(row.get("hooks")),
        auto_apply: row.get::<i64, _>("auto_apply") != 0,
        state_serial: row.get("state_serial"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// After a run ended: its workspace, credentials and any state lock it held
/// go, and the next queued run of its stack becomes READY.
pub(super) async fn after_run_ended(
    tx: &mut Transaction<'_, Any>,
    run_id: &str,
    now: i64,
) -> Result<()> {
    let stack_id: Option<Option<String>> =
        sqlx::query_scalar("SELECT stack_id FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some(Some(stack_id)) = stack_id else {
        return Ok(());
    };
    lock::stack(tx, &stack_id).await?;
    for statement in [
        "DELETE FROM run_workspaces WHERE run_id = $1",
        "DELETE FROM run_credentials WHERE run_id = $1",
        "DELETE FROM state_locks WHERE run_id = $1",
    ] {
        sqlx::query(statement)
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
    }
    promote_next(tx, &stack_id, now).await
}

/// Makes the oldest QUEUED run of the stack READY when no run before it is pending.
async fn promote_next(tx: &mut Transaction<'_, Any>, stack_id: &str, now: i64) -> Result<()> {
    let busy: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM runs WHERE stack_id = $1 AND state NOT IN {TERMINAL} AND state != 'QUEUED'"
    ))
    .bind(stack_id)
    .fetch_one(&mut **tx)
    .await?;
    if busy > 0 {
        return Ok(());
    }
    let next: Option<String> = sqlx::query_scalar(
        "UPDATE runs SET state = 'READY', updated_at = $1
         WHERE seq = (SELECT seq FROM runs WHERE stack_id = $2 AND state = 'QUEUED' ORDER BY seq LIMIT 1)
         RETURNING id",
    )
    .bind(now)
    .bind(stack_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(next) = next {
        record_transition(tx, &next, RunState::Ready, None, now).await?;
    }
    Ok(())
}

impl SqlStore {
    fn seal_secret_env(&self, stack_id: &str, secret_env: &BTreeMap<String, String>) -> String {
        let context = SECRET_ENV.context(&[stack_id]);
        SECRET_ENV.seal_text(&self.keyring, &context, &to_json(secret_env))
    }

    async fn stack_by_id(&self, stack_id: &str) -> Result<StackRecord> {
        let row = sqlx::query(&format!("{SELECT_STACK} WHERE s.id = $1"))
            .bind(stack_id)
            .fetch_optional(&self.writer)
            .await?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("stack {stack_id}")))?;
        stack_from_row(&row, &self.keyring)
    }
}

#[async_trait]
impl StackStore for SqlStore {
    async fn create_stack(
        &self,
        stack: &StackRecord,
        archive: Option<&[u8]>,
        now: i64,
    ) -> Result<StackRecord> {
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO stacks (id, name, pool_id, git_url, git_ref, archive, archive_sha256, project_root,
                image, tool, tool_version, tool_path, labels, env, secret_env, hooks, auto_apply, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&id)
        .bind(&stack.name)
        .bind(&stack.pool_id)
        .bind(&stack.git_url)
        .bind(&stack.git_ref)
        .bind(archive)
        .bind(&stack.archive_sha256)
        .bind(&stack.project_root)
        .bind(&stack.image)
        .bind(&stack.tool)
        .bind(&stack.tool_version)
        .bind(&stack.tool_path)
        .bind(to_json(&stack.labels))
        .bind(to_json(&stack.env))
        .bind(self.seal_secret_env(&id, &stack.secret_env))
        .bind(to_json(&stack.hooks))
        .bind(stack.auto_apply as i64)
        .bind(now)
        .bind(now)
        .execute(&self.writer)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "a stack named {:?} already exists; pick another name or update it with `gantry stack update`",
                stack.name
            )));
        }
        self.stack_by_id(&id).await
    }

    async fn list_stacks(&self) -> Result<Vec<StackRecord>> {
        let rows = sqlx::query(&format!("{SELECT_STACK} ORDER BY s.name"))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| stack_from_row(r, &self.keyring))
            .collect()
    }

    async fn find_stack(&self, id_or_name: &str) -> Result<Option<StackRecord>> {
        let row = sqlx::query(&format!("{SELECT_STACK} WHERE s.id = $1 OR s.name = $1"))
            .bind(id_or_name)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| stack_from_row(&r, &self.keyring)).transpose()
    }

    async fn update_stack(
        &self,
        stack: &StackRecord,
        archive: Option<&[u8]>,
        now: i64,
    ) -> Result<StackRecord> {
        let mut tx = self.writer.begin().await?;
        lock::stack(&mut tx, &stack.id).await?;
        sqlx::query(
            "UPDATE stacks SET pool_id = $1, git_url = $2, git_ref = $3, archive_sha256 = $4, project_root = $5,
                image = $6, tool = $7, tool_version = $8, tool_path = $9, labels = $10, env = $11, secret_env = $12, hooks = $13, auto_apply = $14,
                updated_at = $15
             WHERE id = $16",
        )
        .bind(&stack.pool_id)
        .bind(&stack.git_url)
        .bind(&stack.git_ref)
        .bind(&stack.archive_sha256)
        .bind(&stack.project_root)
        .bind(&stack.image)
        .bind(&stack.tool)
        .bind(&stack.tool_version)
        .bind(&stack.tool_path)
        .bind(to_json(&stack.labels))
        .bind(to_json(&stack.env))
        .bind(self.seal_secret_env(&stack.id, &stack.secret_env))
        .bind(to_json(&stack.hooks))
        .bind(stack.auto_apply as i64)
        .bind(now)
        .bind(&stack.id)
        .execute(&mut *tx)
        .await?;
        if archive.is_some() || stack.git_url.is_some() {
            sqlx::query("UPDATE stacks SET archive = $1 WHERE id = $2")
                .bind(archive)
                .bind(&stack.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.stack_by_id(&stack.id).await
    }

    async fn delete_stack(&self, stack_id: &str) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        lock::stack(&mut tx, stack_id).await?;
        let pending: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM runs WHERE stack_id = $1 AND state NOT IN {TERMINAL}"
        ))
        .bind(stack_id)
        .fetch_one(&mut *tx)
        .await?;
        if pending > 0 {
            return Err(StoreError::Conflict(format!(
                "the stack has {pending} run(s) that have not ended; stop or discard them first"
            )));
        }
        for statement in [
            "DELETE FROM state_versions WHERE stack_id = $1",
            "DELETE FROM state_locks WHERE stack_id = $1",
            "DELETE FROM run_credentials WHERE stack_id = $1",
            "DELETE FROM stacks WHERE id = $1",
        ] {
            sqlx::query(statement)
                .bind(stack_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stack_archive(&self, stack_id: &str) -> Result<Option<Vec<u8>>> {
        let archive: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT archive FROM stacks WHERE id = $1")
                .bind(stack_id)
                .fetch_optional(&self.reader)
                .await?;
        Ok(archive.flatten())
    }

    async fn insert_stack_run(
        &self,
        stack: &StackRecord,
        run_type: RunType,
        command: &[String],
        now: i64,
    ) -> Result<RunRecord> {
        let id = new_id();
        let mut tx = self.writer.begin().await?;
        // Whether the run waits behind another is decided under the stack's lock.
        lock::stack(&mut tx, &stack.id).await?;
        let pending: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM runs WHERE stack_id = $1 AND state NOT IN {TERMINAL}"
        ))
        .bind(&stack.id)
        .fetch_one(&mut *tx)
        .await?;
        let state = if pending == 0 {
            RunState::Ready
        } else {
            RunState::Queued
        };
        sqlx::query(
            "INSERT INTO runs (id, pool_id, pool_name, run_type, state, command, env, image, stack_id, stack_name,
                created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, '{}', $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(&stack.pool_id)
        .bind(&stack.pool_name)
        .bind(run_type.as_str())
        .bind(state.as_str())
        .bind(to_json(&command))
        .bind(&stack.image)
        .bind(&stack.id)
        .bind(&stack.name)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        record_transition(&mut tx, &id, RunState::Queued, None, now).await?;
        if state == RunState::Ready {
            record_transition(&mut tx, &id, RunState::Ready, None, now).await?;
        }
        let record = run_by_id(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn report_plan(
        &self,
        run_id: &str,
        lease_id: &str,
        report: &PlanReport,
        now: i64,
    ) -> Result<RunRecord> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let updated = sqlx::query(&format!(
            "UPDATE runs SET commit_sha = COALESCE($1, commit_sha), plan = COALESCE($2, plan),
                outputs = COALESCE($3, outputs), updated_at = $4
             WHERE id = $5 AND lease_id = $6 AND state IN {HELD}"
        ))
        .bind(&report.commit_sha)
        .bind(&report.plan)
        .bind(&report.outputs)
        .bind(now)
        .bind(run_id)
        .bind(lease_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(fenced_error(&mut tx, run_id).await);
        }
        let record = run_by_id(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn park_unconfirmed(
        &self,
        run_id: &str,
        lease_id: &str,
        log_chunks: u64,
        now: i64,
    ) -> Result<RunRecord> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let updated = sqlx::query(
            "UPDATE runs SET state = 'UNCONFIRMED', lease_expires_at = NULL,
                log_base = log_base + $1, updated_at = $2, stop_requested = 0
             WHERE id = $3 AND lease_id = $4 AND state = 'PLANNING' AND run_type IN ('tracked', 'destroy')
               AND EXISTS (SELECT 1 FROM run_workspaces w WHERE w.run_id = runs.id)"
        )
        .bind(i64::try_from(log_chunks).map_err(|_| {
            StoreError::Conflict(format!("{log_chunks} log chunks is out of range"))
        })?)
        .bind(now)
        .bind(run_id)
        .bind(lease_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            let current = run_by_id(&mut tx, run_id).await?;
            if current.state == RunState::Unconfirmed
                && current.lease_id.as_deref() == Some(lease_id)
            {
                return Ok(current); // a retried report whose first attempt landed
            }
            if current.lease_id.as_deref() != Some(lease_id) {
                return Err(StoreError::LeaseLost);
            }
            if current.state != RunState::Planning
                || !matches!(current.run_type, RunType::Tracked | RunType::Destroy)
            {
                return Err(StoreError::Conflict(format!(
                    "outcome `planned` ends only the PLANNING phase of a tracked or destroy run; \
                     run {run_id} is a {} run in {}",
                    current.run_type.as_str(),
                    current.state
                )));
            }
            return Err(StoreError::Conflict(
                "upload the run's workspace before reporting it planned".into(),
            ));
        }
        sqlx::query("DELETE FROM run_credentials WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM state_locks WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        record_transition(&mut tx, run_id, RunState::Unconfirmed, None, now).await?;
        let record = run_by_id(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn put_workspace(&self, run_id: &str, lease_id: &str, data: &[u8]) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let held: Option<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM runs WHERE id = $1 AND lease_id = $2 AND state IN {HELD}"
        ))
        .bind(run_id)
        .bind(lease_id)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Err(fenced_error(&mut tx, run_id).await);
        }
        let context = WORKSPACE.context(&[run_id]);
        sqlx::query(
            "INSERT INTO run_workspaces (run_id, data) VALUES ($1, $2)
             ON CONFLICT (run_id) DO UPDATE SET data = excluded.data",
        )
        .bind(run_id)
        .bind(WORKSPACE.seal_blob(&self.keyring, &context, data))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn workspace(&self, run_id: &str, lease_id: &str) -> Result<Option<Vec<u8>>> {
        let row: Option<(Option<String>, Option<Vec<u8>>)> = sqlx::query_as(&format!(
            "SELECT r.id, w.data FROM runs r LEFT JOIN run_workspaces w ON w.run_id = r.id
             WHERE r.id = $1 AND r.lease_id = $2 AND r.state IN {HELD}"
        ))
        .bind(run_id)
        .bind(lease_id)
        .fetch_optional(&self.writer)
        .await?;
        match row {
            Some((_, None)) => Ok(None),
            Some((_, Some(data))) => {
                let context = WORKSPACE.context(&[run_id]);
                Ok(Some(WORKSPACE.open_blob(&self.keyring, &context, &data)?))
            }
            None => Err(StoreError::LeaseLost),
        }
    }

    async fn confirm_run(&self, run_id: &str, now: i64) -> Result<RunRecord> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let updated = sqlx::query(
            // The plan's lease ID stays on an UNCONFIRMED run, for its
            // worker's retried reports; the apply gets a lease of its own.
            "UPDATE runs SET state = 'CONFIRMED', lease_id = NULL, updated_at = $1 WHERE id = $2 AND state = 'UNCONFIRMED'",
        )
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            let run = run_by_id(&mut tx, run_id).await?;
            return Err(StoreError::Conflict(format!(
                "run {run_id} is {}: only a tracked or destroy run waiting in UNCONFIRMED can be confirmed",
                run.state
            )));
        }
        record_transition(&mut tx, run_id, RunState::Confirmed, None, now).await?;
        let record = run_by_id(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn discard_run(&self, run_id: &str, now: i64) -> Result<RunRecord> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let run = run_by_id(&mut tx, run_id).await?;
        if run.state != RunState::Unconfirmed {
            return Err(StoreError::Conflict(format!(
                "run {run_id} is {}: only a tracked or destroy run waiting in UNCONFIRMED can be discarded",
                run.state
            )));
        }
        super::runs::end_run_in_tx(
            &mut tx,
            run_id,
            "DISCARDED",
            None,
            Some("discarded: the plan was not applied"),
            now,
        )
        .await?;
        let record = run_by_id(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn add_run_credential(
        &self,
        token_hash: &str,
        run_id: &str,
        stack_id: &str,
        lease_id: &str,
        read_only: bool,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO run_credentials (token_hash, run_id, stack_id, lease_id, read_only, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(run_id)
        .bind(stack_id)
        .bind(lease_id)
        .bind(read_only as i64)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn check_run_credential(&self, token_hash: &str) -> Result<Option<RunCredential>> {
        // The reader: a credential is committed before its lease reaches the
        // launcher, and the state backend must not queue behind the writer.
        let row: Option<(String, String, String, i64)> = sqlx::query_as(&format!(
            "SELECT r.id, c.stack_id, s.name, c.read_only
             FROM run_credentials c JOIN runs r ON r.id = c.run_id JOIN stacks s ON s.id = c.stack_id
             WHERE c.token_hash = $1 AND r.stack_id = c.stack_id
               AND r.lease_id = c.lease_id AND r.state IN {HELD}"
        ))
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(
            row.map(|(run_id, stack_id, stack_name, read_only)| RunCredential {
                run_id,
                stack_id,
                stack_name,
                read_only: read_only != 0,
            }),
        )
    }
}
