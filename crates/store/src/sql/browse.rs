use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::Row;

use super::runs::{run_from_row, TERMINAL};
use super::SqlStore;
use crate::{BrowseStore, LogChunk, Result, RunPage, RunRecord};

#[async_trait]
impl BrowseStore for SqlStore {
    async fn page_runs(&self, page: &RunPage) -> Result<Vec<RunRecord>> {
        let limit = match page.limit {
            0 => 50,
            n => n.min(500),
        };
        let sql = format!(
            "SELECT * FROM runs
             WHERE ($1 IS NULL OR pool_id = $1) AND ($2 IS NULL OR stack_id = $2)
               AND ($3 IS NULL OR state = $3) AND ($4 IS NULL OR run_type = $4)
               AND ($5 = 0 OR state NOT IN {TERMINAL})
               AND ($6 IS NULL OR seq < (SELECT seq FROM runs WHERE id = $6))
             ORDER BY seq DESC LIMIT $7"
        );
        let rows = sqlx::query(&sql)
            .bind(page.pool_id.as_deref())
            .bind(page.stack_id.as_deref())
            .bind(page.state.map(|s| s.as_str()))
            .bind(page.run_type.map(|t| t.as_str()))
            .bind(page.active_only as i64)
            .bind(page.before.as_deref())
            .bind(limit as i64)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(run_from_row).collect())
    }

    async fn read_log_tail(
        &self,
        run_id: &str,
        upto: Option<u64>,
        max_bytes: usize,
    ) -> Result<Vec<LogChunk>> {
        let upto = upto.unwrap_or(i64::MAX as u64).min(i64::MAX as u64) as i64;
        // Streamed, newest first, and dropped as soon as there is enough:
        // a 100 MB log costs what the tail costs.
        let mut rows = sqlx::query(
            "SELECT seq, data FROM log_chunks WHERE run_id = $1 AND seq <= $2 ORDER BY seq DESC",
        )
        .bind(run_id)
        .bind(upto)
        .fetch(&self.reader);
        let mut chunks: Vec<LogChunk> = Vec::new();
        let mut bytes = 0;
        while let Some(row) = rows.try_next().await? {
            let seq = row.get::<i64, _>("seq") as u64;
            if chunks.last().is_some_and(|last| last.seq != seq + 1) {
                break;
            }
            let data: Vec<u8> = row.get("data");
            bytes += data.len();
            chunks.push(LogChunk { seq, data });
            if bytes >= max_bytes {
                break;
            }
        }
        chunks.reverse();
        Ok(chunks)
    }
}
