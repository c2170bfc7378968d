use async_trait::async_trait;
use sqlx::Row;

use super::{lock, new_id, SqlStore};
use crate::{ApiTokenRecord, Result, StoreError, TokenStore};

#[async_trait]
impl TokenStore for SqlStore {
    async fn count_api_tokens(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.get(0))
    }

    async fn insert_api_token(
        &self,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<ApiTokenRecord> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO api_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(ApiTokenRecord {
            id,
            name: name.to_string(),
            created_at: now,
            revoked_at: None,
        })
    }

    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>> {
        let row = sqlx::query(
            "SELECT id, name, created_at, revoked_at FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|row| ApiTokenRecord {
            id: row.get("id"),
            name: row.get("name"),
            created_at: row.get("created_at"),
            revoked_at: row.get("revoked_at"),
        }))
    }

    async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        let rows = sqlx::query("SELECT id, name, created_at, revoked_at FROM api_tokens WHERE revoked_at IS NULL ORDER BY created_at")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|row| ApiTokenRecord {
                id: row.get("id"),
                name: row.get("name"),
                created_at: row.get("created_at"),
                revoked_at: row.get("revoked_at"),
            })
            .collect())
    }

    async fn revoke_api_token(&self, id: &str, now: i64) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        lock::active_tokens(&mut tx).await?;
        let active: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")
                .fetch_one(&mut *tx)
                .await?;
        let target: Option<String> =
            sqlx::query_scalar("SELECT id FROM api_tokens WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if target.is_none() {
            return Err(StoreError::NotFound(format!("API token {id}")));
        }
        if active <= 1 {
            return Err(StoreError::Conflict(
                "this is the last active API token; create another before revoking it".into(),
            ));
        }
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
