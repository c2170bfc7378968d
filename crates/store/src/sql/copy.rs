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

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnection, Postgres};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteLockingMode};
use sqlx::{Connection, Executor, QueryBuilder, Row};

use super::sqlite::sqlite_url;

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
    /// SHA-256 over the rows in primary-key order (see [`RowDigest`]).
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

/// The SQLite file, held exclusively: in WAL mode every open connection
/// keeps a shared lock on the file, so the exclusive lock is refused while a
/// server (even an idle one) has it open, and, once taken, keeps any server
/// from opening it until this connection closes.
async fn open_source(data_dir: &Path, file: &Path) -> Result<SqliteConnection, CopyError> {
    let options = SqliteConnectOptions::from_str(&sqlite_url(data_dir))?
        .create_if_missing(false)
        .locking_mode(SqliteLockingMode::Exclusive)
        .busy_timeout(SOURCE_LOCK_WAIT);
    let in_use = |error: sqlx::Error| match &error {
        sqlx::Error::Database(e) if e.message().contains("locked") => {
            CopyError::SourceInUse(file.to_path_buf())
        }
        _ => CopyError::SourceSchema {
            file: file.to_path_buf(),
            problem: error.to_string(),
        },
    };
    let mut connection = SqliteConnection::connect_with(&options)
        .await
        .map_err(in_use)?;
    connection
        .execute("BEGIN EXCLUSIVE")
        .await
        .map_err(in_use)?;
    Ok(connection)
}

/// The source must have exactly the migrations this build has: an older
/// database lacks columns, a newer one has columns this copy would drop.
async fn check_source_migrations(
    source: &mut SqliteConnection,
    file: &Path,
) -> Result<(), CopyError> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *source)
            .await
            .map_err(|e| CopyError::SourceSchema {
                file: file.to_path_buf(),
                problem: format!("not a Gantry database ({e})"),
            })?;
    let known: Vec<i64> = sqlx::migrate!("./migrations/sqlite")
        .iter()
        .map(|m| m.version)
        .collect();
    if applied == known {
        return Ok(());
    }
    let newest = |v: &[i64]| v.last().map_or("none".to_string(), |n| format!("{n:04}"));
    let fix = if applied.iter().all(|v| known.contains(v)) {
        "start `gantry server --data-dir` of this version once (it migrates the database at \
         start), stop it, and copy again"
    } else {
        "a newer Gantry wrote it: copy with that version's `gantry db copy`"
    };
    Err(CopyError::SourceSchema {
        file: file.to_path_buf(),
        problem: format!(
            "the database is at migration {}, this gantry expects {}: {fix}",
            newest(&applied),
            newest(&known)
        ),
    })
}

/// The target's tables must be exactly [`TABLES`]: a table added by a later
/// migration and missing here would otherwise be left behind silently.
async fn check_tables(target: &mut PgConnection) -> Result<(), CopyError> {
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
         AND table_name <> '_sqlx_migrations' ORDER BY table_name",
    )
    .fetch_all(&mut *target)
    .await?;
    let unknown: Vec<&str> = present
        .iter()
        .map(String::as_str)
        .filter(|t| !TABLES.iter().any(|k| k.name == *t))
        .collect();
    let missing: Vec<&str> = TABLES
        .iter()
        .map(|t| t.name)
        .filter(|t| !present.iter().any(|p| p == t))
        .collect();
    if unknown.is_empty() && missing.is_empty() {
        return Ok(());
    }
    Err(CopyError::Database(format!(
        "the PostgreSQL schema does not match what this copy knows (tables not copied: [{}]; \
         tables missing: [{}]): is another application's schema in this database?",
        unknown.join(", "),
        missing.join(", ")
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bytes,
}

#[derive(Debug)]
struct Column {
    name: String,
    kind: Kind,
    /// PostgreSQL generates it (`runs.seq`): its sequence must move past the copied values.
    identity: bool,
}

/// The target's columns decide how each value is read from SQLite, whose
/// columns take any type.
async fn target_columns(target: &mut PgConnection, table: &str) -> Result<Vec<Column>, CopyError> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text, is_identity::text \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *target)
    .await?;
    rows.iter()
        .map(|row| {
            let name: String = row.get(0);
            let data_type: String = row.get(1);
            let kind = match data_type.as_str() {
                "bigint" => Kind::Int,
                "text" => Kind::Text,
                "bytea" => Kind::Bytes,
                other => {
                    return Err(CopyError::Database(format!(
                        "{table}.{name}: column type {other} is not one this copy handles"
                    )))
                }
            };
            let identity: String = row.get(2);
            Ok(Column {
                name,
                kind,
                identity: identity == "YES",
            })
        })
        .collect()
}

async fn check_source_columns(
    source: &mut SqliteConnection,
    file: &Path,
    table: &str,
    target: &[Column],
) -> Result<(), CopyError> {
    let mut have: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
        .bind(table)
        .fetch_all(&mut *source)
        .await?;
    let mut want: Vec<String> = target.iter().map(|c| c.name.clone()).collect();
    have.sort();
    want.sort();
    if have == want {
        return Ok(());
    }
    Err(CopyError::SourceSchema {
        file: file.to_path_buf(),
        problem: format!(
            "table {table} has columns [{}], PostgreSQL has [{}]",
            have.join(", "),
            want.join(", ")
        ),
    })
}

/// One value, typed by its target column.
#[derive(Debug)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    fn read<'r, R>(row: &'r R, index: usize, kind: Kind) -> Result<Value, sqlx::Error>
    where
        R: Row,
        usize: sqlx::ColumnIndex<R>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(match kind {
            Kind::Int => Value::Int(row.try_get(index)?),
            Kind::Text => Value::Text(row.try_get(index)?),
            Kind::Bytes => Value::Bytes(row.try_get(index)?),
        })
    }

    fn size(&self) -> usize {
        match self {
            Value::Int(_) => 8,
            Value::Text(s) => s.as_ref().map_or(0, String::len),
            Value::Bytes(b) => b.as_ref().map_or(0, Vec::len),
        }
    }
}

/// SHA-256 over a table's rows in key order, each value encoded
/// unambiguously: a tag (0 null, 1 integer, 2 text, 3 bytes), then an
/// integer as 8 big-endian bytes, or text and bytes as an 8-byte big-endian
/// length and the bytes. The same rows give the same digest on either engine.
struct RowDigest {
    rows: u64,
    hasher: Sha256,
}

impl RowDigest {
    fn new() -> RowDigest {
        RowDigest {
            rows: 0,
            hasher: Sha256::new(),
        }
    }

    fn add(&mut self, row: &[Value]) {
        self.rows += 1;
        for value in row {
            match value {
                Value::Int(None) | Value::Text(None) | Value::Bytes(None) => {
                    self.hasher.update([0])
                }
                Value::Int(Some(n)) => {
                    self.hasher.update([1]);
                    self.hasher.update(n.to_be_bytes());
                }
                Value::Text(Some(s)) => self.bytes(2, s.as_bytes()),
                Value::Bytes(Some(b)) => self.bytes(3, b),
            }
        }
    }

    fn bytes(&mut self, tag: u8, data: &[u8]) {
        self.hasher.update([tag]);
        self.hasher.update((data.len() as u64).to_be_bytes());
        self.hasher.update(data);
    }

    fn finish(self) -> (u64, String) {
        (self.rows, hex::encode(self.hasher.finalize()))
    }
}

fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ORDER BY` the key, text compared byte by byte on both engines: SQLite's
/// BINARY collation is PostgreSQL's "C", whatever the database's locale.
fn key_order(table: &Table, columns: &[Column], postgres: bool) -> String {
    table
        .key
        .iter()
        .map(|key| {
            let text = columns
                .iter()
                .any(|c| c.name == *key && c.kind == Kind::Text);
            if postgres && text {
                format!("{key} COLLATE \"C\"")
            } else {
                key.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Streams the table out of SQLite into batched INSERTs; returns the digest
/// of the rows as read.
async fn copy_table(
    source: &mut SqliteConnection,
    target: &mut PgConnection,
    table: &Table,
    columns: &[Column],
) -> Result<RowDigest, CopyError> {
    let select = format!(
        "SELECT {} FROM {} ORDER BY {}",
        column_list(columns),
        table.name,
        key_order(table, columns, false)
    );
    let max_rows = BATCH_ROWS.min(65_535 / columns.len());
    let mut digest = RowDigest::new();
    let mut batch: Vec<Vec<Value>> = Vec::new();
    let mut batch_bytes = 0;
    let mut rows = sqlx::query(&select).fetch(&mut *source);
    while let Some(row) = rows.try_next().await? {
        let values = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Value::read(&row, i, c.kind))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CopyError::Database(format!("reading {}: {e}", table.name)))?;
        digest.add(&values);
        batch_bytes += values.iter().map(Value::size).sum::<usize>();
        batch.push(values);
        if batch.len() >= max_rows || batch_bytes >= BATCH_BYTES {
            insert(target, table.name, columns, &mut batch).await?;
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        insert(target, table.name, columns, &mut batch).await?;
    }
    Ok(digest)
}

async fn insert(
    target: &mut PgConnection,
    table: &str,
    columns: &[Column],
    batch: &mut Vec<Vec<Value>>,
) -> Result<(), CopyError> {
    let mut query =
        QueryBuilder::<Postgres>::new(format!("INSERT INTO {table} ({}) ", column_list(columns)));
    query.push_values(batch.drain(..), |mut row, values| {
        for value in values {
            match value {
                Value::Int(v) => row.push_bind(v),
                Value::Text(v) => row.push_bind(v),
                Value::Bytes(v) => row.push_bind(v),
            };
        }
    });
    query
        .build()
        .execute(&mut *target)
        .await
        .map_err(|e| CopyError::Database(format!("writing {table}: {e}")))?;
    Ok(())
}

async fn target_digest(
    target: &mut PgConnection,
    table: &Table,
    columns: &[Column],
) -> Result<RowDigest, CopyError> {
    let select = format!(
        "SELECT {} FROM {} ORDER BY {}",
        column_list(columns),
        table.name,
        key_order(table, columns, true)
    );
    let mut digest = RowDigest::new();
    let mut rows = sqlx::query(&select).fetch(&mut *target);
    while let Some(row) = rows.try_next().await? {
        let values = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Value::read(&row, i, c.kind))
            .collect::<Result<Vec<_>, _>>()?;
        digest.add(&values);
    }
    Ok(digest)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(rows: &[Vec<Value>]) -> String {
        let mut digest = RowDigest::new();
        for row in rows {
            digest.add(row);
        }
        digest.finish().1
    }

    fn text(s: Option<&str>) -> Value {
        Value::Text(s.map(str::to_string))
    }

    #[test]
    fn the_row_encoding_tells_apart_what_concatenation_would_not() {
        let split = |a, b| digest(&[vec![text(Some(a)), text(Some(b))]]);
        assert_ne!(split("ab", "c"), split("a", "bc"));
        assert_ne!(digest(&[vec![text(None)]]), digest(&[vec![text(Some(""))]]));
        assert_ne!(
            digest(&[vec![Value::Int(Some(0))]]),
            digest(&[vec![Value::Int(None)]])
        );
        assert_ne!(
            digest(&[vec![text(Some("x"))]]),
            digest(&[vec![Value::Bytes(Some(b"x".to_vec()))]])
        );
        // Row order matters: the rows are hashed in key order on both sides.
        let (a, b) = (vec![Value::Int(Some(1))], vec![Value::Int(Some(2))]);
        assert_ne!(
            digest(&[a, b]),
            digest(&[vec![Value::Int(Some(2))], vec![Value::Int(Some(1))]])
        );
    }
}
