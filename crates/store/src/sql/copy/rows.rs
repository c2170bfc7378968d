//! Rows out of SQLite, into PostgreSQL, and their digests on both sides.

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnection, Postgres};
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row};

use super::schema::{Column, Kind};
use super::{CopyError, Table, BATCH_BYTES, BATCH_ROWS};

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
pub(super) struct RowDigest {
    pub(super) rows: u64,
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

    pub(super) fn finish(self) -> (u64, String) {
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
pub(super) async fn copy_table(
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

pub(super) async fn target_digest(
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
