//! Row locks for write transactions on PostgreSQL.
//!
//! Under READ COMMITTED, a transaction that reads a row and then writes on
//! the strength of what it read can lose to a concurrent one. So every write
//! transaction first locks the rows its decision rests on: the run it
//! changes, the stack whose queue or state it touches. Once a row is locked,
//! every later statement of the transaction sees its latest committed value.
//!
//! To keep replicas from deadlocking, locks are always taken in this order:
//! a pool, then a worker, then runs (by ID), then stacks; API tokens on
//! their own. On SQLite every call here is a
//! no-op: its single writer connection already serializes write transactions.

use sqlx::AnyConnection;

use crate::Result;

fn is_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name() == "PostgreSQL"
}

/// Locks one run's row (if it exists).
pub(super) async fn run(conn: &mut AnyConnection, run_id: &str) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE")
            .bind(run_id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Locks one run's row against changes, not against other shared lockers.
pub(super) async fn run_shared(conn: &mut AnyConnection, run_id: &str) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM runs WHERE id = $1 FOR SHARE")
            .bind(run_id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Locks a worker's row against changes: a claim for it holds this, so
/// that "drain it if it holds no run" (which locks the row for update,
/// then looks at its runs in a statement of its own) sees the claim's run,
/// or the claim sees the drain.
pub(super) async fn worker_shared(conn: &mut AnyConnection, worker_id: &str) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM workers WHERE id = $1 FOR SHARE")
            .bind(worker_id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Locks a worker's row for an update decided on its runs.
pub(super) async fn worker(conn: &mut AnyConnection, worker_id: &str) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM workers WHERE id = $1 FOR UPDATE")
            .bind(worker_id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Locks the rows of the runs matching `condition` (SQL over table `runs`,
/// with `$1` bound to `arg`), in ID order.
pub(super) async fn runs_where(conn: &mut AnyConnection, condition: &str, arg: &str) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query(&format!(
            "SELECT 1 FROM runs WHERE {condition} ORDER BY id FOR UPDATE"
        ))
        .bind(arg)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Locks a stack's row: its run queue, state versions and state lock are
/// decided under it.
pub(super) async fn stack(conn: &mut AnyConnection, stack_id: &str) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM stacks WHERE id = $1 FOR UPDATE")
            .bind(stack_id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Locks a pool's row: its generation and key are decided under it.
pub(super) async fn pool(conn: &mut AnyConnection, pool_id: &str) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM pools WHERE id = $1 FOR UPDATE")
            .bind(pool_id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Locks every active API token: "never revoke the last one" is decided under it.
pub(super) async fn active_tokens(conn: &mut AnyConnection) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM api_tokens WHERE revoked_at IS NULL ORDER BY id FOR UPDATE")
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Makes a read transaction one snapshot on PostgreSQL (SQLite's read
/// transactions already are).
pub(super) async fn one_snapshot(conn: &mut AnyConnection) -> Result<()> {
    if is_postgres(conn) {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The clause a claim's choice of READY rows ends with: on PostgreSQL,
/// rows another claimer holds are skipped rather than waited for.
pub(super) fn skip_locked(conn: &AnyConnection) -> &'static str {
    if is_postgres(conn) {
        "FOR UPDATE SKIP LOCKED"
    } else {
        ""
    }
}
