use async_trait::async_trait;
use sqlx::Row;

use super::{lock, SqlStore};
use crate::{ChunkWrite, LogChunk, LogStore, Result, StoreError};

#[async_trait]
impl LogStore for SqlStore {
    async fn put_log_chunk(
        &self,
        run_id: &str,
        lease_id: &str,
        seq: u64,
        data: &[u8],
    ) -> Result<ChunkWrite> {
        let mut tx = self.writer.begin().await?;
        // Shared: uploads of one run's chunks go on side by side; a claim,
        // which changes the lease, waits for them.
        lock::run_shared(&mut tx, run_id).await?;
        let existing: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM log_chunks WHERE run_id = $1 AND seq = $2")
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
        // The lease that made the log may complete it even after the run
        // ended (a launcher restarted on its work directory uploads what it
        // spooled before it died); chunks are still written once.
        let held: Option<String> =
            sqlx::query_scalar("SELECT id FROM runs WHERE id = $1 AND lease_id = $2")
                .bind(run_id)
                .bind(lease_id)
                .fetch_optional(&mut *tx)
                .await?;
        if held.is_none() {
            return Err(StoreError::LeaseLost);
        }
        // Two uploads of one chunk at once (a retry racing the original,
        // through two replicas): one inserts, the other compares.
        let inserted = sqlx::query(
            "INSERT INTO log_chunks (run_id, seq, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(run_id)
        .bind(seq as i64)
        .bind(data)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let stored: Vec<u8> =
                sqlx::query_scalar("SELECT data FROM log_chunks WHERE run_id = $1 AND seq = $2")
                    .bind(run_id)
                    .bind(seq as i64)
                    .fetch_one(&mut *tx)
                    .await?;
            return if stored == data {
                Ok(ChunkWrite::Duplicate)
            } else {
                Err(StoreError::Conflict(format!(
                    "log chunk {seq} of run {run_id} was already stored with different content"
                )))
            };
        }
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
            "SELECT seq, data FROM log_chunks WHERE run_id = $1 AND seq >= $2 ORDER BY seq LIMIT 256",
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

    async fn next_stored_log_seq(&self, run_id: &str, from: u64) -> Result<Option<u64>> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MIN(seq) FROM log_chunks WHERE run_id = $1 AND seq >= $2")
                .bind(run_id)
                .bind(from.min(i64::MAX as u64) as i64)
                .fetch_one(&self.reader)
                .await?;
        Ok(seq.map(|s| s as u64))
    }

    async fn missing_log_chunks(
        &self,
        run_id: &str,
        from: u64,
        to: u64,
        limit: u64,
    ) -> Result<Vec<u64>> {
        let (from, to) = (from.min(i64::MAX as u64), to.min(i64::MAX as u64));
        // Walks the stored numbers in order, and stops at `limit` gaps: the
        // cost is bounded by what is stored, never by what a caller claims.
        let mut present = sqlx::query_scalar::<_, i64>(
            "SELECT seq FROM log_chunks WHERE run_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
        )
        .bind(run_id)
        .bind(from as i64)
        .bind(to as i64)
        .fetch(&self.reader);
        let mut missing = Vec::new();
        let mut next = from;
        while (missing.len() as u64) < limit && next < to {
            let upto = match futures_util::TryStreamExt::try_next(&mut present).await? {
                Some(seq) => seq as u64,
                None => to,
            };
            while next < upto && (missing.len() as u64) < limit {
                missing.push(next);
                next += 1;
            }
            next = upto + 1;
        }
        Ok(missing)
    }
}
