//! Worker pools and workers as the API shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/pools`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatePool {
    pub name: String,
    /// The PEM certificate signing request made from the pool's private key.
    pub csr: String,
    #[serde(default)]
    pub description: String,
}

/// `POST /api/v1/pools/{pool}/reset`: a new CSR; the old token stops working.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResetPool {
    pub csr: String,
    /// Reset even though stacks of the pool hold values sealed to the old
    /// key (secret variables, plans waiting to be applied). Without it, the
    /// reset is refused (409) and names them; a CSR of the same key needs none.
    #[serde(default)]
    pub force: bool,
}

/// A stack whose sealed values a pool reset to a new key leaves unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealedStack {
    pub name: String,
    /// Secret variables to set again (`gantry stack update NAME --secret-env K=V`).
    pub secret_env: Vec<String>,
    /// UNCONFIRMED or CONFIRMED runs whose stored plan is sealed to the old key.
    pub runs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    pub id: String,
    pub name: String,
    pub description: String,
    /// SHA-256 of the pool's public key (SubjectPublicKeyInfo DER), hex.
    pub key_fingerprint: String,
    /// Bumped by every reset; tokens of older generations are refused.
    pub generation: i64,
    /// Workers registered before this instant were told to drain and exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycled_at: Option<String>,
    pub created_at: String,
    pub workers: i64,
    pub queued_runs: i64,
}

/// The answer to create and reset: the pool, plus its token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolWithToken {
    pub id: String,
    pub name: String,
    /// The pool token (base64 JSON). Store it with the private key; it is
    /// not shown again.
    pub token: String,
    pub pool: Pool,
    /// After a reset to a new key: the stacks whose secret variables must
    /// be set again, and whose waiting plans were discarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacks_affected: Vec<SealedStack>,
    /// After a reset to a new key: runs discarded because their stored plan
    /// was sealed to the old key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs_discarded: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Idle,
    Busy,
    Drained,
    /// Not heard from within the lease timeout.
    Lost,
    /// Deregistered: exited cleanly.
    Gone,
}

impl WorkerState {
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Drained => "drained",
            WorkerState::Lost => "lost",
            WorkerState::Gone => "gone",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    pub id: String,
    /// The pool's name.
    pub pool: String,
    pub pool_id: String,
    pub state: WorkerState,
    pub version: String,
    pub hostname: String,
    /// From the launcher's `GANTRY_METADATA_<key>` variables.
    pub tags: BTreeMap<String, String>,
    pub max_concurrent_runs: u32,
    pub running: Vec<String>,
    pub drain: bool,
    pub registered_at: String,
    pub last_seen: String,
}

/// `GET /api/v1/version`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    pub version: String,
    /// Where launchers of this version are downloaded from.
    pub launcher_download_url: String,
}

/// `POST /api/v1/tokens`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateApiToken {
    pub name: String,
}

/// An API token as listed: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// The answer to create: the token's value, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub token_info: ApiToken,
}
