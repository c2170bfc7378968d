//! Declares silent workers lost: every run whose lease expired ends FAILED
//! with reason "worker lost". A worker that comes back later finds its lease
//! gone and is told to abandon the run (fencing).

use std::time::Duration;

use crate::state::{now_ms, AppState};

pub async fn run(state: AppState) {
    // Check often enough that a run fails within ~5% of the lease timeout.
    let period =
        (state.config.lease_timeout / 20).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match state.store.expire_leases(now_ms()).await {
            Ok(expired) => {
                for run in expired {
                    tracing::warn!(
                        run_id = %run.id,
                        worker_id = run.worker_id.as_deref().unwrap_or(""),
                        "worker lost; run failed"
                    );
                    state.signals.run_ended(&run.id);
                    if run.stack_id.is_some() {
                        state.signals.run_ready(&run.pool_id);
                    }
                }
            }
            Err(error) => tracing::error!(%error, "lease expiry sweep failed"),
        }
    }
}
