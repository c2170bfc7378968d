//! Store records to wire types.

use std::time::{Duration, UNIX_EPOCH};

use gantry_store::{PoolRecord, RunRecord, StackRecord, TransitionRecord, WorkerRecord};
use gantry_wire::pool::{Pool, Worker, WorkerState};
use gantry_wire::run::{Run, Transition};
use gantry_wire::stack::{Stack, Tool};

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

pub fn pool(record: &PoolRecord) -> Pool {
    Pool {
        id: record.id.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
        key_fingerprint: record.key.key_fingerprint.clone(),
        generation: record.generation,
        cycled_at: record.cycled_at.map(timestamp),
        created_at: timestamp(record.created_at),
        workers: record.workers,
        queued_runs: record.queued_runs,
    }
}

pub fn run(record: &RunRecord, transitions: &[TransitionRecord]) -> Run {
    Run {
        id: record.id.clone(),
        pool_id: record.pool_id.clone(),
        pool: record.pool_name.clone(),
        run_type: record.run_type,
        state: record.state,
        command: record.command.clone(),
        env: record.env.keys().cloned().collect(),
        image: record.image.clone(),
        worker_id: record.worker_id.clone(),
        exit_code: record.exit_code,
        reason: record.reason.clone(),
        stop_requested: record.stop_requested && !record.state.is_terminal(),
        stack_id: record.stack_id.clone(),
        stack: record.stack_name.clone(),
        commit_sha: record.commit_sha.clone(),
        plan: record
            .plan
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
        outputs: record
            .outputs
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default(),
        created_at: timestamp(record.created_at),
        updated_at: timestamp(record.updated_at),
        transitions: transitions
            .iter()
            .map(|t| Transition {
                state: t.state,
                at: timestamp(t.at),
                reason: t.reason.clone(),
            })
            .collect(),
    }
}

pub fn worker(record: &WorkerRecord, now: i64, lease_timeout_ms: i64) -> Worker {
    let state = if record.gone_at.is_some() {
        WorkerState::Gone
    } else if now - record.last_seen > lease_timeout_ms {
        WorkerState::Lost
    } else if record.drain {
        WorkerState::Drained
    } else if !record.running.is_empty() {
        WorkerState::Busy
    } else {
        WorkerState::Idle
    };
    Worker {
        id: record.id.clone(),
        pool: record.pool_name.clone(),
        pool_id: record.pool_id.clone(),
        state,
        version: record.version.clone(),
        hostname: record.hostname.clone(),
        tags: record.tags.clone(),
        max_concurrent_runs: record.max_concurrent_runs,
        running: record.running.clone(),
        drain: record.drain,
        registered_at: timestamp(record.registered_at),
        last_seen: timestamp(record.last_seen),
    }
}

/// A stack as the API shows it: secret variables by name only, the git
/// URL without its credentials.
pub fn stack(record: &StackRecord) -> Stack {
    Stack {
        id: record.id.clone(),
        name: record.name.clone(),
        pool_id: record.pool_id.clone(),
        pool: record.pool_name.clone(),
        source: if record.git_url.is_some() {
            "git"
        } else {
            "upload"
        }
        .to_string(),
        // Credentials in the URL stay with the launcher that clones it.
        git_url: record
            .git_url
            .as_deref()
            .map(gantry_wire::stack::redact_git_url),
        git_ref: record.git_ref.clone(),
        archive_sha256: record.archive_sha256.clone(),
        project_root: record.project_root.clone(),
        image: record.image.clone(),
        tool: Tool::parse(&record.tool).unwrap_or_default(),
        tool_version: record.tool_version.clone(),
        tool_path: record.tool_path.clone(),
        labels: record.labels.clone(),
        env: record.env.clone(),
        secret_env: record.secret_env.keys().cloned().collect(),
        hooks: record.hooks.clone(),
        auto_apply: record.auto_apply,
        state_serial: record.state_serial,
        created_at: timestamp(record.created_at),
        updated_at: timestamp(record.updated_at),
    }
}
