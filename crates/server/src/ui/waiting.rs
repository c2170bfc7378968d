//! Why a run that has not started waits, from the store: an earlier run on
//! its stack, no worker in its pool, or every worker busy or drained.

use gantry_store::{RunPage, RunRecord};
use gantry_wire::pool::WorkerState;
use gantry_wire::run::RunState;

use crate::convert;
use crate::state::{now_ms, AppState};

pub async fn why(state: &AppState, run: &RunRecord) -> crate::error::ApiResult<Option<String>> {
    match run.state {
        RunState::Queued => {
            let Some(stack_id) = &run.stack_id else {
                return Ok(Some("queued; it becomes ready in a moment".into()));
            };
            // Runs on one stack go one at a time, oldest first: the oldest
            // one not ended, other than this one, holds the stack.
            let active = state
                .store
                .page_runs(&RunPage {
                    stack_id: Some(stack_id.clone()),
                    active_only: true,
                    limit: 500,
                    ..RunPage::default()
                })
                .await?;
            let holder = active
                .iter()
                .rev()
                .find(|other| other.id != run.id && other.created_at <= run.created_at);
            Ok(Some(match holder {
                Some(holder) => format!(
                    "waiting for an earlier run on stack {}: run {} ({}) must end first",
                    run.stack_name.as_deref().unwrap_or(stack_id),
                    holder.id,
                    holder.state
                ),
                None => "queued behind an earlier run on its stack, which just ended".into(),
            }))
        }
        RunState::Ready | RunState::Confirmed => {
            let workers = state.store.list_workers(Some(&run.pool_id), false).await?;
            let (now, lease) = (now_ms(), crate::api::lease_ms(state));
            let states: Vec<(WorkerState, bool)> = workers
                .iter()
                .map(|w| {
                    (
                        convert::worker(w, now, lease).state,
                        w.running.len() as u32 >= w.max_concurrent_runs,
                    )
                })
                .filter(|(s, _)| !matches!(s, WorkerState::Lost | WorkerState::Gone))
                .collect();
            let pool = &run.pool_name;
            Ok(Some(if states.is_empty() {
                format!("no worker in pool {pool} is connected: start a launcher with the pool's token")
            } else if states.iter().all(|(s, _)| *s == WorkerState::Drained) {
                format!("every worker of pool {pool} is drained: undrain one, or start another")
            } else if states
                .iter()
                .all(|(s, full)| *s == WorkerState::Drained || *full)
            {
                format!(
                    "all {} workers of pool {pool} are busy: it starts when one is free",
                    states.len()
                )
            } else {
                format!("waiting for a worker of pool {pool} to take it (a free one should within seconds)")
            }))
        }
        RunState::Unconfirmed => Ok(Some(
            "the plan waits for a confirmation: Confirm applies exactly this plan, Discard drops it".into(),
        )),
        RunState::Lost => Ok(Some(
            "its worker was lost during the apply; the run keeps its stack and state lock until the worker \
             comes back, or an operator gives up on it (Unlock on the stack's page)"
                .into(),
        )),
        _ => Ok(None),
    }
}
