use async_trait::async_trait;
use sqlx::Row;

use super::runs::LEASED;
use super::SqliteStore;
use crate::{ChunkWrite, LogChunk, LogStore, Result, StoreError};

#[async_trait]
impl LogStore for SqliteStore {
    async fn put_log_chunk(
        &self,
        run_id: &str,
        lease_id: &str,
        seq: u64,
        data: &[u8],
    ) -> Result<ChunkWrite> {
        let mut tx = self.writer.begin().await?;
        let existing: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM log_chunks WHERE run_id = ? AND seq = ?")
                .bind(run_id)
                .bind(seq as i64)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(existing) = existing {
            // A retry of an upload that landed: fine, whatever the lease is now.
            return if existing == data {
                Ok(ChunkWrite::Duplicate)
            } else {
                Err(StoreError::Conflict(format!(
                    "log chunk {seq} of run {run_id} was already stored with different content"
                )))
            };
        }
        let held: Option<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM runs WHERE id = ? AND lease_id = ? AND state IN {LEASED}"
        ))
        .bind(run_id)
        .bind(lease_id)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Err(StoreError::LeaseLost);
        }
        sqlx::query("INSERT INTO log_chunks (run_id, seq, data) VALUES (?, ?, ?)")
            .bind(run_id)
            .bind(seq as i64)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ChunkWrite::Inserted)
    }

    async fn read_log_chunks(
        &self,
        run_id: &str,
        from_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<LogChunk>> {
        // Stream rows and stop at the first gap: readers must never skip a
        // chunk that is still being uploaded.
        let rows = sqlx::query(
            "SELECT seq, data FROM log_chunks WHERE run_id = ? AND seq >= ? ORDER BY seq LIMIT 256",
        )
        .bind(run_id)
        .bind(from_seq as i64)
        .fetch_all(&self.reader)
        .await?;
        let mut chunks = Vec::new();
        let mut bytes = 0;
        for (expected, row) in (from_seq..).zip(rows) {
            let seq = row.get::<i64, _>("seq") as u64;
            if seq != expected || (bytes >= max_bytes && !chunks.is_empty()) {
                break;
            }
            let data: Vec<u8> = row.get("data");
            bytes += data.len();
            chunks.push(LogChunk { seq, data });
        }
        Ok(chunks)
    }

    async fn missing_log_chunks(&self, run_id: &str, count: u64) -> Result<Vec<u64>> {
        let present: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM log_chunks WHERE run_id = ? AND seq < ? ORDER BY seq",
        )
        .bind(run_id)
        .bind(count as i64)
        .fetch_all(&self.reader)
        .await?;
        let mut present = present.into_iter().map(|s| s as u64).peekable();
        let mut missing = Vec::new();
        for seq in 0..count {
            if present.peek() == Some(&seq) {
                present.next();
            } else {
                missing.push(seq);
            }
        }
        Ok(missing)
    }
}
