//! Runs: what a user submits, and how the control plane reports them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The run state machine (see ARCHITECTURE.md: "Bird's-eye view" for a
/// run's life, "Stacks and Terraform runs" for plan and confirm, and
/// "Invariants").
///
/// QUEUED → READY → PREPARING → INITIALIZING → PLANNING → UNCONFIRMED →
/// CONFIRMED → APPLYING → FINISHED, or an end in FAILED, STOPPED, DISCARDED
/// or CANCELED. A `task` run goes PREPARING → APPLYING: its command is what
/// it applies.
///
/// LOST is the one state off that line: a stack run whose lease expired while
/// APPLYING. Its apply may still be running, and may still write state, so
/// the run keeps its lease ID, its stack and its state lock. Its worker
/// coming back resumes it (LOST → APPLYING); an operator gives up on it with
/// `gantry stack state unlock --force` (LOST → FAILED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    Queued,
    Ready,
    Preparing,
    Initializing,
    Planning,
    Unconfirmed,
    Confirmed,
    Applying,
    Lost,
    Finished,
    Failed,
    Stopped,
    Discarded,
    Canceled,
}

impl RunState {
    pub const ALL: [RunState; 14] = [
        RunState::Queued,
        RunState::Ready,
        RunState::Preparing,
        RunState::Initializing,
        RunState::Planning,
        RunState::Unconfirmed,
        RunState::Confirmed,
        RunState::Applying,
        RunState::Lost,
        RunState::Finished,
        RunState::Failed,
        RunState::Stopped,
        RunState::Discarded,
        RunState::Canceled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "QUEUED",
            RunState::Ready => "READY",
            RunState::Preparing => "PREPARING",
            RunState::Initializing => "INITIALIZING",
            RunState::Planning => "PLANNING",
            RunState::Unconfirmed => "UNCONFIRMED",
            RunState::Confirmed => "CONFIRMED",
            RunState::Applying => "APPLYING",
            RunState::Lost => "LOST",
            RunState::Finished => "FINISHED",
            RunState::Failed => "FAILED",
            RunState::Stopped => "STOPPED",
            RunState::Discarded => "DISCARDED",
            RunState::Canceled => "CANCELED",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }

    /// A terminal state never changes again.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Finished
                | RunState::Failed
                | RunState::Stopped
                | RunState::Discarded
                | RunState::Canceled
        )
    }

    /// A leased state: a worker holds the run and must keep its lease alive.
    pub const fn is_leased(self) -> bool {
        matches!(
            self,
            RunState::Preparing
                | RunState::Initializing
                | RunState::Planning
                | RunState::Applying
                | RunState::Confirmed
        )
    }

    /// A worker's lease ID still speaks for the run: it is leased, or LOST
    /// and waiting for that worker to come back.
    pub const fn is_held(self) -> bool {
        self.is_leased() || matches!(self, RunState::Lost)
    }

    /// The states a launcher may report while it holds the lease.
    pub const fn is_worker_phase(self) -> bool {
        matches!(
            self,
            RunState::Preparing | RunState::Initializing | RunState::Planning | RunState::Applying
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunType {
    Task,
    Proposed,
    Tracked,
    Destroy,
}

impl RunType {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunType::Task => "task",
            RunType::Proposed => "proposed",
            RunType::Tracked => "tracked",
            RunType::Destroy => "destroy",
        }
    }

    pub fn parse(s: &str) -> Option<RunType> {
        [
            RunType::Task,
            RunType::Proposed,
            RunType::Tracked,
            RunType::Destroy,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// `POST /api/v1/runs`: queue a task run on a pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SubmitRun {
    /// Pool name or ID.
    pub pool: String,
    /// The command and its arguments; run without a shell.
    pub command: Vec<String>,
    /// Environment variables for the run.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Runner image, for the Docker executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// One recorded state change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    pub state: RunState,
    /// RFC 3339, millisecond precision, UTC.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub pool_id: String,
    pub pool: String,
    #[serde(rename = "type")]
    pub run_type: RunType,
    pub state: RunState,
    pub command: Vec<String>,
    /// Names of the run's environment variables; values are not shown.
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The worker holding or last holding the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the run ended as it did, when it did not simply finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A stop was requested and the worker has not yet confirmed it.
    #[serde(default)]
    pub stop_requested: bool,
    /// The stack, for runs triggered on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The exact source commit the run used (git sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// What the plan adds, changes and destroys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::stack::PlanSummary>,
    /// Outputs after apply; sensitive values masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<crate::stack::RunOutput>,
    pub created_at: String,
    pub updated_at: String,
    pub transitions: Vec<Transition>,
}
