//! Encryption at rest: the columns that hold secrets are encrypted under the
//! control plane's keyring ([`gantry_pki::at_rest`]) on their way into the
//! database and decrypted on the way out, so a copy of `gantry.db` (or its
//! WAL, or a backup) holds none of them in clear.
//!
//! Each value is bound to its row (the context below): a ciphertext copied
//! into another stack's row does not decrypt.

use gantry_pki::at_rest::{key_id_of, AtRestError, SecretsKeyring};
use sqlx::Row;

use super::{Engine, SqlStore};
use crate::{Result, StoreError};

/// One encrypted column, and how to name a row of it.
pub(super) struct SealedColumn {
    table: &'static str,
    column: &'static str,
    /// SQL giving a row's context; must equal what [`SealedColumn::context`] makes.
    context_sql: &'static str,
    /// TEXT columns hold base64 of the ciphertext; BLOB columns the bytes.
    text: bool,
}

/// Terraform state holds every resource attribute, sensitive outputs included.
pub(super) const STATE: SealedColumn = SealedColumn {
    table: "state_versions",
    column: "data",
    context_sql: "'state_versions.data/' || stack_id || '/' || version",
    text: false,
};
/// Already sealed to the pool's key; this second layer keeps even the
/// ciphertext out of a database copy.
pub(super) const WORKSPACE: SealedColumn = SealedColumn {
    table: "run_workspaces",
    column: "data",
    context_sql: "'run_workspaces.data/' || run_id",
    text: false,
};
/// Values sealed to the pool's key; encrypting the whole map also hides the names.
pub(super) const SECRET_ENV: SealedColumn = SealedColumn {
    table: "stacks",
    column: "secret_env",
    context_sql: "'stacks.secret_env/' || id",
    text: true,
};
const ALL: [&SealedColumn; 3] = [&STATE, &WORKSPACE, &SECRET_ENV];

impl SealedColumn {
    fn name(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }

    /// `parts` identify the row: the same values, in order, as `context_sql`.
    pub(super) fn context(&self, parts: &[&str]) -> String {
        format!("{}.{}/{}", self.table, self.column, parts.join("/"))
    }

    pub(super) fn seal_blob(
        &self,
        keyring: &SecretsKeyring,
        context: &str,
        data: &[u8],
    ) -> Vec<u8> {
        debug_assert!(!self.text);
        keyring.encrypt(context, data)
    }

    pub(super) fn open_blob(
        &self,
        keyring: &SecretsKeyring,
        context: &str,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        keyring
            .decrypt(context, data)
            .map_err(|e| self.error(context, e))
    }

    pub(super) fn seal_text(&self, keyring: &SecretsKeyring, context: &str, text: &str) -> String {
        use base64::Engine;
        debug_assert!(self.text);
        base64::engine::general_purpose::STANDARD.encode(keyring.encrypt(context, text.as_bytes()))
    }

    pub(super) fn open_text(
        &self,
        keyring: &SecretsKeyring,
        context: &str,
        stored: &str,
    ) -> Result<String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .map_err(|_| self.error(context, AtRestError::Corrupt))?;
        let plain = keyring
            .decrypt(context, &bytes)
            .map_err(|e| self.error(context, e))?;
        String::from_utf8(plain).map_err(|_| self.error(context, AtRestError::Corrupt))
    }

    /// SQL for the first 16 bytes of a stored value: enough for its header.
    fn head_sql(&self, engine: Engine) -> String {
        let c = self.column;
        match (engine, self.text) {
            (Engine::Sqlite, _) => format!("CAST(substr({c}, 1, 16) AS BLOB)"),
            (Engine::Postgres, false) => format!("substr({c}, 1, 16)"),
            (Engine::Postgres, true) => format!("convert_to(substr({c}, 1, 16), 'UTF8')"),
        }
    }

    fn error(&self, context: &str, error: AtRestError) -> StoreError {
        StoreError::SecretsKey(format!("{context}: {error}"))
    }

    /// The key a stored value is under; None when it is in clear.
    fn key_of(&self, head: &[u8]) -> Option<String> {
        let bytes = if self.text {
            use base64::Engine;
            // 16 base64 characters are exactly the 12-byte header.
            base64::engine::general_purpose::STANDARD
                .decode(head.get(..16)?)
                .ok()?
        } else {
            head.to_vec()
        };
        key_id_of(&bytes).map(|id| id.to_string())
    }
}

/// How many values of one column are under one key (`None`: in clear).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretsUsage {
    pub column: String,
    pub key_id: Option<String>,
    pub values: u64,
}

impl SqlStore {
    /// Counts the encrypted values by column and key.
    pub async fn secrets_usage(&self) -> Result<Vec<SecretsUsage>> {
        let mut usage: Vec<SecretsUsage> = Vec::new();
        for column in ALL {
            let heads: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
                "SELECT {head} FROM {t}",
                head = column.head_sql(self.engine),
                t = column.table
            ))
            .fetch_all(&self.writer)
            .await?;
            for head in heads {
                let key_id = column.key_of(&head);
                match usage
                    .iter_mut()
                    .find(|u| u.column == column.name() && u.key_id == key_id)
                {
                    Some(u) => u.values += 1,
                    None => usage.push(SecretsUsage {
                        column: column.name(),
                        key_id,
                        values: 1,
                    }),
                }
            }
        }
        Ok(usage)
    }

    /// Re-encrypts under the keyring's current key every value that is not
    /// (or, with `only_clear`, every value still in clear). Safe while the
    /// server runs: each row is swapped only if it did not change meanwhile.
    /// Returns how many values were rewritten.
    pub async fn reencrypt_secrets(&self, only_clear: bool) -> Result<u64> {
        let mut rewritten = 0;
        for column in ALL {
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(&format!(
                "SELECT {ctx}, {head} FROM {t}",
                ctx = column.context_sql,
                head = column.head_sql(self.engine),
                t = column.table
            ))
            .fetch_all(&self.writer)
            .await?;
            for (context, head) in rows {
                let done = match column.key_of(&head) {
                    None => false,
                    Some(id) => only_clear || id == self.keyring.current().to_string(),
                };
                if !done && self.reencrypt_row(column, &context).await? {
                    rewritten += 1;
                }
            }
        }
        Ok(rewritten)
    }

    /// Rows are named by their context, which is unique (it is built from
    /// the row's key) and the same on both engines.
    async fn reencrypt_row(&self, column: &SealedColumn, context: &str) -> Result<bool> {
        let (c, t, ctx) = (column.column, column.table, column.context_sql);
        let mut tx = self.writer.begin().await?;
        let lock = match self.engine {
            Engine::Sqlite => "",
            Engine::Postgres => "FOR UPDATE",
        };
        let Some(row) = sqlx::query(&format!(
            "SELECT {c} AS value FROM {t} WHERE {ctx} = $1 {lock}"
        ))
        .bind(context)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false); // deleted meanwhile
        };
        if column.text {
            let stored: String = row.get("value");
            let plain = match column.key_of(stored.as_bytes()) {
                Some(_) => column.open_text(&self.keyring, context, &stored)?,
                None => stored.clone(),
            };
            let sealed = column.seal_text(&self.keyring, context, &plain);
            sqlx::query(&format!("UPDATE {t} SET {c} = $1 WHERE {ctx} = $2"))
                .bind(sealed)
                .bind(context)
                .execute(&mut *tx)
                .await?;
        } else {
            let stored: Vec<u8> = row.get("value");
            let plain = match key_id_of(&stored) {
                Some(_) => column.open_blob(&self.keyring, context, &stored)?,
                None => stored.clone(),
            };
            let sealed = column.seal_blob(&self.keyring, context, &plain);
            sqlx::query(&format!("UPDATE {t} SET {c} = $1 WHERE {ctx} = $2"))
                .bind(sealed)
                .bind(context)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// At open: every value must be readable with this keyring, and values
    /// from before encryption at rest (in clear) are encrypted now.
    pub(super) async fn prepare_secrets(&self) -> Result<()> {
        let known: Vec<String> = self.keyring.ids().iter().map(|id| id.to_string()).collect();
        let usage = self.secrets_usage().await?;
        let unknown: Vec<String> = usage
            .iter()
            .filter_map(|u| {
                let id = u.key_id.as_ref()?;
                (!known.contains(id))
                    .then(|| format!("{} value(s) of {} under key {id}", u.values, u.column))
            })
            .collect();
        if !unknown.is_empty() {
            return Err(StoreError::SecretsKey(format!(
                "the database holds values encrypted under keys missing from the secrets keyring (it has {}): {}. \
                 Add the missing key as a later line of the keyring (GANTRY_SECRETS_KEY or --secrets-key-file)",
                known.join(", "),
                unknown.join("; ")
            )));
        }
        if usage.iter().any(|u| u.key_id.is_none()) {
            let count = self.reencrypt_secrets(true).await?;
            tracing::info!(values = count, key = %self.keyring.current(), "encrypted values stored in clear by an earlier version");
        }
        Ok(())
    }
}
