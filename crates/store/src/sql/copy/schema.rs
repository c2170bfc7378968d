//! What must hold before a row moves: the source is ours alone and at this
//! build's schema, the target has the tables and columns this copy knows.

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteLockingMode};
use sqlx::{Connection, Executor, Row};

use super::{CopyError, SOURCE_LOCK_WAIT, TABLES};
use crate::sql::sqlite::sqlite_url;

/// The SQLite file, held exclusively: in WAL mode every open connection
/// keeps a shared lock on the file, so the exclusive lock is refused while a
/// server (even an idle one) has it open, and, once taken, keeps any server
/// from opening it until this connection closes.
pub(super) async fn open_source(
    data_dir: &Path,
    file: &Path,
) -> Result<SqliteConnection, CopyError> {
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
pub(super) async fn check_source_migrations(
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
pub(super) async fn check_tables(target: &mut PgConnection) -> Result<(), CopyError> {
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
pub(super) enum Kind {
    Int,
    Text,
    Bytes,
}

#[derive(Debug)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) kind: Kind,
    /// PostgreSQL generates it (`runs.seq`): its sequence must move past the copied values.
    pub(super) identity: bool,
}

/// The target's columns decide how each value is read from SQLite, whose
/// columns take any type.
pub(super) async fn target_columns(
    target: &mut PgConnection,
    table: &str,
) -> Result<Vec<Column>, CopyError> {
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

pub(super) async fn check_source_columns(
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
