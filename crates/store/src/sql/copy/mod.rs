//! `gantry db copy`: a stopped SQLite control plane into an empty
//! PostgreSQL database, row for row.
//!
//! Values are copied as stored. The columns encrypted at rest are bound to
//! their row's key, not to the engine, so their ciphertext stays valid under
//! the same keyring and the copy needs no key at all.
//!
//! Safety, in order:
//! - the SQLite file is held in exclusive locking mode for the whole copy:
//!   taking that lock fails while any other connection (a running server)
//!   has the file open, and nothing can open it until the copy ends;
//! - the source must be at exactly the schema this build knows (its
//!   migrations), so that every column has a place on the other side;
//! - the target is migrated, then every table is locked and must be empty;
//! - every row goes in within one transaction, which is verified (row count
//!   and SHA-256 per table, read back from the target) before it commits: a
//!   failure anywhere leaves the target with its schema and no rows.

mod rows;
mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor};

use rows::{copy_table, target_digest};
use schema::{
    check_source_columns, check_source_migrations, check_tables, open_source, target_columns,
};

/// A table and its primary key (the order rows are read and checksummed in).
pub struct Table {
    pub name: &'static str,
    pub key: &'static [&'static str],
}

/// Every table, parents before children (`workers` → `pools`,
/// `worker_sessions` → `workers`, `stacks` → `pools`). A table the target
/// schema has and this list lacks stops the copy (see `check_tables`).
pub const TABLES: [Table; 13] = [
    Table {
        name: "api_tokens",
        key: &["id"],
    },
    Table {
        name: "pools",
        key: &["id"],
    },
    Table {
        name: "workers",
        key: &["id"],
    },
    Table {
        name: "worker_sessions",
        key: &["token_hash"],
    },
    Table {
        name: "registration_nonces",
        key: &["nonce"],
    },
    Table {
        name: "runs",
        key: &["seq"],
    },
    Table {
        name: "run_transitions",
        key: &["run_id", "seq"],
    },
    Table {
        name: "log_chunks",
        key: &["run_id", "seq"],
    },
    Table {
        name: "stacks",
        key: &["id"],
    },
    Table {
        name: "run_workspaces",
        key: &["run_id"],
    },
    Table {
        name: "run_credentials",
        key: &["token_hash"],
    },
    Table {
        name: "state_versions",
        key: &["stack_id", "version"],
    },
    Table {
        name: "state_locks",
        key: &["stack_id"],
    },
];

/// How long to wait for the SQLite file's lock: a running server holds it
/// for as long as it runs, so waiting longer would not help.
const SOURCE_LOCK_WAIT: Duration = Duration::from_millis(500);
/// How long to wait for the target's table locks (a replica mid-request).
const TARGET_LOCK_WAIT: &str = "10s";
/// Rows per INSERT are capped by PostgreSQL's 65,535 bind parameters, and
/// by bytes so that a batch of large log chunks stays small in memory.
const BATCH_ROWS: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{}: no Gantry database there (is --from-data-dir the server's --data-dir?)", .0.display())]
    SourceMissing(PathBuf),
    #[error(
        "{}: the database is in use (locked by another process): stop `gantry server` \
         (every process using this data directory) and copy again",
        .0.display()
    )]
    SourceInUse(PathBuf),
    #[error("{}: {problem}", .file.display())]
    SourceSchema { file: PathBuf, problem: String },
    #[error("cannot connect to the PostgreSQL database: {0}")]
    TargetUnreachable(String),
    #[error(
        "the PostgreSQL database is not empty: {}; copy into an empty database (drop and \
         create it again), before any `gantry server` starts on it",
        .0.iter().map(|(t, n)| format!("{t} holds {n} row(s)")).collect::<Vec<_>>().join(", ")
    )]
    TargetNotEmpty(Vec<(String, i64)>),
    #[error(
        "verification failed, nothing was copied (the transaction was rolled back): {}",
        .0.iter().filter(|t| !t.ok).map(|t| format!(
            "{}: {} row(s) read, {} written, sha256 {} read, {} written",
            t.table, t.source_rows, t.target_rows, t.source_sha256, t.target_sha256
        )).collect::<Vec<_>>().join("; ")
    )]
    Mismatch(Vec<TableReport>),
    #[error("{0}")]
    Database(String),
}

impl From<sqlx::Error> for CopyError {
    fn from(error: sqlx::Error) -> Self {
        CopyError::Database(error.to_string())
    }
}

/// What the copy is doing, for a progress display.
#[derive(Debug)]
pub enum CopyEvent<'a> {
    Copying { table: &'a str },
    Copied { table: &'a str, rows: u64 },
    Verified(&'a TableReport),
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub source_rows: u64,
    pub target_rows: u64,
    /// SHA-256 over the rows in primary-key order, values encoded as `rows::RowDigest` says.
    pub source_sha256: String,
    pub target_sha256: String,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// The SQLite file copied.
    pub source: PathBuf,
    pub tables: Vec<TableReport>,
    pub rows: u64,
    /// Where each identity column's sequence continues, e.g. `runs.seq`.
    pub sequences: Vec<SequenceReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SequenceReport {
    pub column: String,
    pub next_value: i64,
}

/// Copies `<data_dir>/gantry.db` into the empty PostgreSQL database at
/// `database_url`, migrating it first, and verifies every table.
pub async fn copy_sqlite_to_postgres(
    data_dir: &Path,
    database_url: &str,
    mut progress: impl FnMut(CopyEvent<'_>),
) -> Result<CopyReport, CopyError> {
    let file = data_dir.join("gantry.db");
    if !file.is_file() {
        return Err(CopyError::SourceMissing(file));
    }
    let mut source = open_source(data_dir, &file).await?;
    check_source_migrations(&mut source, &file).await?;

    let mut target = PgConnection::connect(database_url)
        .await
        .map_err(|e| CopyError::TargetUnreachable(e.to_string()))?;
    sqlx::migrate!("./migrations/postgres")
        .run(&mut target)
        .await
        .map_err(|e| CopyError::Database(format!("migrating the PostgreSQL database: {e}")))?;
    check_tables(&mut target).await?;
    let mut columns = Vec::new();
    for table in &TABLES {
        let target_columns = target_columns(&mut target, table.name).await?;
        check_source_columns(&mut source, &file, table.name, &target_columns).await?;
        columns.push(target_columns);
    }

    let mut tx = target.begin().await?;
    tx.execute(format!("SET LOCAL lock_timeout = '{TARGET_LOCK_WAIT}'").as_str())
        .await?;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    tx.execute(format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", names.join(", ")).as_str())
        .await?;
    let mut held = Vec::new();
    for table in &TABLES {
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", table.name))
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            held.push((table.name.to_string(), count));
        }
    }
    if !held.is_empty() {
        return Err(CopyError::TargetNotEmpty(held));
    }

    let mut read = Vec::new();
    for (table, columns) in TABLES.iter().zip(&columns) {
        progress(CopyEvent::Copying { table: table.name });
        let digest = copy_table(&mut source, &mut tx, table, columns).await?;
        progress(CopyEvent::Copied {
            table: table.name,
            rows: digest.rows,
        });
        read.push(digest.finish());
    }
    let mut sequences = Vec::new();
    for (table, columns) in TABLES.iter().zip(&columns) {
        for column in columns.iter().filter(|c| c.identity) {
            sequences
                .push(continue_sequence(&mut source, &mut tx, table.name, &column.name).await?);
        }
    }

    // Read back inside the transaction: a mismatch rolls everything back.
    let mut tables = Vec::new();
    for ((table, columns), (source_rows, source_sha256)) in TABLES.iter().zip(&columns).zip(read) {
        let (target_rows, target_sha256) = target_digest(&mut tx, table, columns).await?.finish();
        let report = TableReport {
            table: table.name.to_string(),
            ok: source_rows == target_rows && source_sha256 == target_sha256,
            source_rows,
            target_rows,
            source_sha256,
            target_sha256,
        };
        progress(CopyEvent::Verified(&report));
        tables.push(report);
    }
    if tables.iter().any(|t| !t.ok) {
        tx.rollback().await?;
        return Err(CopyError::Mismatch(tables));
    }
    tx.commit().await?;
    target.close().await?;
    // The source was only read: end its transaction and release the file.
    source.execute("ROLLBACK").await?;
    source.close().await?;
    Ok(CopyReport {
        source: file,
        rows: tables.iter().map(|t| t.target_rows).sum(),
        tables,
        sequences,
    })
}

/// Moves the identity column's sequence past both the copied values and
/// SQLite's AUTOINCREMENT counter, so that no value is ever given twice
/// (SQLite never reuses one, even of a deleted row).
async fn continue_sequence(
    source: &mut SqliteConnection,
    target: &mut PgConnection,
    table: &str,
    column: &str,
) -> Result<SequenceReport, CopyError> {
    let used: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
        .bind(table)
        .fetch_optional(&mut *source)
        .await?;
    let max: i64 = sqlx::query_scalar(&format!("SELECT COALESCE(MAX({column}), 0) FROM {table}"))
        .fetch_one(&mut *target)
        .await?;
    let next_value = max.max(used.unwrap_or(0)) + 1;
    sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3, false)")
        .bind(table)
        .bind(column)
        .bind(next_value)
        .execute(&mut *target)
        .await?;
    Ok(SequenceReport {
        column: format!("{table}.{column}"),
        next_value,
    })
}
