use async_trait::async_trait;
use gantry_wire::run::{RunState, RunType};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};

use super::{from_json, lock, new_id, to_json, SqlStore};
use crate::{
    HeldLeaseRef, LeaseRenewal, NewRun, Result, RunEnd, RunFilter, RunRecord, RunStore, StoreError,
    TransitionRecord,
};

/// The states in which a worker holds the run's lease, and must renew it.
pub(super) const LEASED: &str = "('PREPARING','INITIALIZING','PLANNING','CONFIRMED','APPLYING')";
/// The states in which the run's lease ID still speaks for it: leased, or
/// LOST (the lease ran out during an apply; its worker may come back).
pub(super) const HELD: &str =
    "('PREPARING','INITIALIZING','PLANNING','CONFIRMED','APPLYING','LOST')";
pub(super) const TERMINAL: &str = "('FINISHED','FAILED','STOPPED','DISCARDED','CANCELED')";
/// The transition LOST → APPLYING, when the run's own lease is heard again.
const WORKER_BACK: &str = "its worker is back: the apply goes on";

pub(super) fn run_from_row(row: &AnyRow) -> RunRecord {
    let state: String = row.get("state");
    let run_type: String = row.get("run_type");
    let command: String = row.get("command");
    let env: String = row.get("env");
    RunRecord {
        id: row.get("id"),
        pool_id: row.get("pool_id"),
        pool_name: row.get("pool_name"),
        run_type: RunType::parse(&run_type).unwrap_or(RunType::Task),
        state: RunState::parse(&state).unwrap_or(RunState::Failed),
        command: from_json(&command),
        env: from_json(&env),
        image: row.get("image"),
        worker_id: row.get("worker_id"),
        lease_id: row.get("lease_id"),
        lease_expires_at: row.get("lease_expires_at"),
        stop_requested: row.get::<i64, _>("stop_requested") != 0,
        exit_code: row.get("exit_code"),
        reason: row.get("reason"),
        stack_id: row.get("stack_id"),
        stack_name: row.get("stack_name"),
        commit_sha: row.get("commit_sha"),
        plan: row.get("plan"),
        outputs: row.get("outputs"),
        log_base: row.get("log_base"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

pub(super) async fn run_by_id(conn: &mut AnyConnection, run_id: &str) -> Result<RunRecord> {
    let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| run_from_row(&r))
        .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))
}

pub(super) async fn record_transition(
    conn: &mut AnyConnection,
    run_id: &str,
    state: RunState,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO run_transitions (run_id, seq, state, at, reason)
         VALUES ($1, (SELECT COALESCE(MAX(seq), -1) + 1 FROM run_transitions WHERE run_id = $1), $2, $3, $4)",
    )
    .bind(run_id)
    .bind(state.as_str())
    .bind(now)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a run that has not ended to a terminal state. Returns false when it
/// had already ended (a terminal state never changes).
pub(super) async fn end_run_in_tx(
    tx: &mut Transaction<'_, Any>,
    run_id: &str,
    state: &str,
    exit_code: Option<i32>,
    reason: Option<&str>,
    now: i64,
) -> Result<bool> {
    let updated = sqlx::query(&format!(
        "UPDATE runs SET state = $1, exit_code = $2, reason = $3, lease_expires_at = NULL, updated_at = $4
         WHERE id = $5 AND state NOT IN {TERMINAL}"
    ))
    .bind(state)
    .bind(exit_code)
    .bind(reason)
    .bind(now)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    let state = RunState::parse(state).expect("callers pass valid states");
    record_transition(tx, run_id, state, reason, now).await?;
    super::stacks::after_run_ended(tx, run_id, now).await?;
    Ok(true)
}

/// `LeaseLost` if the run exists, `NotFound` if it does not.
pub(super) async fn fenced_error(conn: &mut AnyConnection, run_id: &str) -> StoreError {
    match run_by_id(conn, run_id).await {
        Ok(_) => StoreError::LeaseLost,
        Err(error) => error,
    }
}

#[async_trait]
impl RunStore for SqlStore {
    async fn insert_run(&self, run: &NewRun, now: i64) -> Result<RunRecord> {
        let id = new_id();
        let mut tx = self.writer.begin().await?;
        let pool_name: Option<String> = sqlx::query_scalar("SELECT name FROM pools WHERE id = $1")
            .bind(&run.pool_id)
            .fetch_optional(&mut *tx)
            .await?;
        let pool_name =
            pool_name.ok_or_else(|| StoreError::NotFound(format!("pool {}", run.pool_id)))?;
        sqlx::query(
            "INSERT INTO runs (id, pool_id, pool_name, run_type, state, command, env, image, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'READY', $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&run.pool_id)
        .bind(&pool_name)
        .bind(run.run_type.as_str())
        .bind(to_json(&run.command))
        .bind(to_json(&run.env))
        .bind(&run.image)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Task runs wait on nothing but a worker: QUEUED and READY at once.
        record_transition(&mut tx, &id, RunState::Queued, None, now).await?;
        record_transition(&mut tx, &id, RunState::Ready, None, now).await?;
        let record = run_by_id(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn pool_has_claimable_runs(&self, pool_id: &str) -> Result<bool> {
        let claimable: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM runs WHERE pool_id = $1 AND state IN ('READY', 'CONFIRMED') AND lease_id IS NULL LIMIT 1",
        )
        .bind(pool_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(claimable.is_some())
    }

    async fn claim_runs(
        &self,
        pool_id: &str,
        worker_id: &str,
        max: u32,
        lease_expires_at: i64,
        now: i64,
    ) -> Result<Vec<RunRecord>> {
        let mut claimed = Vec::new();
        if max == 0 {
            return Ok(claimed);
        }
        // Most polls find nothing. Asking a reader first keeps those off the
        // single writer; a run made READY after this look wakes the poller,
        // which then looks again.
        if !self.pool_has_claimable_runs(pool_id).await? {
            return Ok(claimed);
        }
        let mut tx = self.writer.begin().await?;
        // PostgreSQL: a drain-if-idle of this worker waits for the claim to
        // commit (or the claim for the drain): see `lock::worker_shared`.
        lock::worker_shared(&mut tx, worker_id).await?;
        // PostgreSQL: the oldest claimable row nobody else is taking; a row
        // another claimer took meanwhile fails the re-check and is skipped.
        let claim = format!(
            "UPDATE runs SET state = CASE state WHEN 'CONFIRMED' THEN 'APPLYING' ELSE 'PREPARING' END,
                worker_id = $1, lease_id = $2, lease_expires_at = $3, updated_at = $4, stop_requested = 0
             WHERE seq = (SELECT seq FROM runs WHERE pool_id = $5 AND state IN ('READY', 'CONFIRMED')
                          AND lease_id IS NULL ORDER BY seq LIMIT 1 {skip_locked})
               -- Checked in the claim itself: a worker drained after its
               -- poll looked (by drain_worker_if_idle, for scale-in) must
               -- never get a run, or its instance could be terminated busy.
               AND NOT EXISTS (SELECT 1 FROM workers WHERE id = $1 AND drain = 1)
             RETURNING id, state",
            skip_locked = lock::skip_locked(&tx)
        );
        for _ in 0..max {
            let lease_id = new_id();
            let claimed_run: Option<(String, String)> = sqlx::query_as(&claim)
                .bind(worker_id)
                .bind(&lease_id)
                .bind(lease_expires_at)
                .bind(now)
                .bind(pool_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((run_id, state)) = claimed_run else {
                break;
            };
            let state = RunState::parse(&state).unwrap_or(RunState::Preparing);
            record_transition(&mut tx, &run_id, state, None, now).await?;
            claimed.push(run_by_id(&mut tx, &run_id).await?);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn renew_leases(
        &self,
        worker_id: &str,
        held: &[HeldLeaseRef],
        lease_expires_at: i64,
        now: i64,
    ) -> Result<LeaseRenewal> {
        let mut renewal = LeaseRenewal::default();
        // In one order, so that two heartbeats never wait on each other.
        let mut held: Vec<&HeldLeaseRef> = held.iter().collect();
        held.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        let mut tx = self.writer.begin().await?;
        sqlx::query("UPDATE workers SET last_seen = $1 WHERE id = $2")
            .bind(now)
            .bind(worker_id)
            .execute(&mut *tx)
            .await?;
        for lease in held {
            lock::run(&mut tx, &lease.run_id).await?;
            let state: Option<String> = sqlx::query_scalar(&format!(
                "SELECT state FROM runs WHERE id = $1 AND lease_id = $2 AND worker_id = $3 AND state IN {HELD}"
            ))
            .bind(&lease.run_id)
            .bind(&lease.lease_id)
            .bind(worker_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(state) = state else {
                renewal.abandon.push(lease.run_id.clone());
                continue;
            };
            sqlx::query(
                "UPDATE runs SET lease_expires_at = $1,
                    state = CASE state WHEN 'LOST' THEN 'APPLYING' ELSE state END
                 WHERE id = $2",
            )
            .bind(lease_expires_at)
            .bind(&lease.run_id)
            .execute(&mut *tx)
            .await?;
            if state == "LOST" {
                record_transition(
                    &mut tx,
                    &lease.run_id,
                    RunState::Applying,
                    Some(WORKER_BACK),
                    now,
                )
                .await?;
                renewal.resumed.push(lease.run_id.clone());
            }
        }
        tx.commit().await?;
        Ok(renewal)
    }

    async fn stop_requests(&self, worker_id: &str) -> Result<Vec<String>> {
        let ids = sqlx::query_scalar(&format!(
            "SELECT id FROM runs WHERE worker_id = $1 AND stop_requested = 1 AND state IN {HELD} ORDER BY seq"
        ))
        .bind(worker_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(ids)
    }

    async fn report_state(
        &self,
        run_id: &str,
        lease_id: &str,
        state: RunState,
        now: i64,
    ) -> Result<RunRecord> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let previous: Option<String> = sqlx::query_scalar(&format!(
            "SELECT state FROM runs WHERE id = $1 AND lease_id = $2 AND state IN {HELD}"
        ))
        .bind(run_id)
        .bind(lease_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(previous) = previous else {
            return Err(fenced_error(&mut tx, run_id).await);
        };
        if previous != state.as_str() {
            sqlx::query("UPDATE runs SET state = $1, updated_at = $2 WHERE id = $3")
                .bind(state.as_str())
                .bind(now)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            record_transition(&mut tx, run_id, state, None, now).await?;
        }
        let record = run_by_id(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn finish_run(
        &self,
        run_id: &str,
        lease_id: &str,
        end: &RunEnd,
        now: i64,
    ) -> Result<RunRecord> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let held: Option<String> = sqlx::query_scalar(&format!(
            "SELECT state FROM runs WHERE id = $1 AND lease_id = $2 AND state IN {HELD}"
        ))
        .bind(run_id)
        .bind(lease_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(held) = held else {
            // A retried finish whose first attempt landed is not an error.
            let current = run_by_id(&mut tx, run_id).await?;
            if current.lease_id.as_deref() == Some(lease_id) && current.state == end.state {
                return Ok(current);
            }
            return Err(StoreError::LeaseLost);
        };
        if held == "LOST" {
            // Its worker is back with the apply's end before any heartbeat
            // (one stuck on a dead connection): the timeline says so, as a
            // heartbeat's resume would.
            record_transition(&mut tx, run_id, RunState::Applying, Some(WORKER_BACK), now).await?;
        }
        end_run_in_tx(
            &mut tx,
            run_id,
            end.state.as_str(),
            end.exit_code,
            end.reason.as_deref(),
            now,
        )
        .await?;
        let record = run_by_id(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn request_stop(&self, run_id: &str, now: i64) -> Result<RunRecord> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let run = run_by_id(&mut tx, run_id).await?;
        match run.state {
            RunState::Queued | RunState::Ready | RunState::Confirmed if run.lease_id.is_none() => {
                end_run_in_tx(
                    &mut tx,
                    run_id,
                    "CANCELED",
                    None,
                    Some("canceled before a worker took it"),
                    now,
                )
                .await?;
            }
            state if state.is_held() => {
                // A LOST run's worker sees the stop if it comes back.
                sqlx::query("UPDATE runs SET stop_requested = 1, updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
            state if state.is_terminal() => {
                return Err(StoreError::Conflict(format!(
                    "run {run_id} already ended ({state})"
                )));
            }
            state => {
                return Err(StoreError::Conflict(format!(
                    "run {run_id} is {state}: no worker runs it; use `gantry run discard` instead"
                )));
            }
        }
        let record = run_by_id(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn expire_leases(&self, now: i64) -> Result<Vec<RunRecord>> {
        let mut tx = self.writer.begin().await?;
        // A run locked by another writer is being heard from or ended right
        // now: skip it; if it still expired, the next pass takes it.
        let expired: Vec<(String, Option<String>, String, Option<String>)> =
            sqlx::query_as(&format!(
                "SELECT id, worker_id, state, stack_id FROM runs
                 WHERE state IN {LEASED} AND lease_expires_at < $1 ORDER BY id {skip_locked}",
                skip_locked = lock::skip_locked(&tx)
            ))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        let mut ended = Vec::new();
        for (run_id, worker_id, state, stack_id) in expired {
            let worker = worker_id.unwrap_or_default();
            if state == "APPLYING" && stack_id.is_some() {
                // The apply may still be running and may still write state:
                // nothing else may touch the stack until we know.
                let reason = format!(
                    "worker lost during the apply: worker {worker} sent no heartbeat before the run's lease \
                     expired; the stack stays locked by this run until the worker comes back with its state, \
                     or an operator gives up on it with `gantry stack state unlock STACK --force`"
                );
                sqlx::query(
                    "UPDATE runs SET state = 'LOST', reason = $1, lease_expires_at = NULL, updated_at = $2
                     WHERE id = $3",
                )
                .bind(&reason)
                .bind(now)
                .bind(&run_id)
                .execute(&mut *tx)
                .await?;
                record_transition(&mut tx, &run_id, RunState::Lost, Some(&reason), now).await?;
                ended.push(run_by_id(&mut tx, &run_id).await?);
                continue;
            }
            let reason = format!(
                "worker lost: worker {worker} sent no heartbeat before the run's lease expired"
            );
            if end_run_in_tx(&mut tx, &run_id, "FAILED", None, Some(&reason), now).await? {
                ended.push(run_by_id(&mut tx, &run_id).await?);
            }
        }
        tx.commit().await?;
        Ok(ended)
    }

    async fn extend_leases(&self, at: i64) -> Result<u64> {
        let moved = sqlx::query(&format!(
            "UPDATE runs SET lease_expires_at = $1 WHERE state IN {LEASED} AND lease_expires_at < $2"
        ))
        .bind(at)
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(moved.rows_affected())
    }

    async fn fail_orphaned_run(
        &self,
        pool_id: &str,
        run_id: &str,
        lease_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<RunRecord>> {
        let mut tx = self.writer.begin().await?;
        lock::run(&mut tx, run_id).await?;
        let held: Option<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM runs WHERE id = $1 AND pool_id = $2 AND lease_id = $3 AND state IN {HELD}"
        ))
        .bind(run_id)
        .bind(pool_id)
        .bind(lease_id)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Ok(None);
        }
        end_run_in_tx(&mut tx, run_id, "FAILED", None, Some(reason), now).await?;
        let record = run_by_id(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn find_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| run_from_row(&r)))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let limit = if filter.limit == 0 {
            100
        } else {
            filter.limit.min(1000)
        };
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE ($1 IS NULL OR pool_id = $1) AND ($2 IS NULL OR state = $2)
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(filter.pool_id.as_deref())
        .bind(filter.state.map(|s| s.as_str()))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(run_from_row).collect())
    }

    async fn run_transitions(&self, run_id: &str) -> Result<Vec<TransitionRecord>> {
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
            "SELECT state, at, reason FROM run_transitions WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(state, at, reason)| TransitionRecord {
                state: RunState::parse(&state).unwrap_or(RunState::Failed),
                at,
                reason,
            })
            .collect())
    }
}
