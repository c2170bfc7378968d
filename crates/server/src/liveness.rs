//! When each worker was last heard from (`last_seen`), written in batches.
//!
//! An idle worker's heartbeat holds no lease, so the only thing it changes
//! is its worker's `last_seen`. Writing that on every heartbeat made idle
//! workers cost a database write each; instead each replica notes who it
//! heard from and writes them all in one transaction per period.
//!
//! Each worker's `last_seen` is the time it was heard, not the time of the
//! write: a worker that dies just after its heartbeat must not look alive
//! for a period longer.
//!
//! `last_seen` is for people and the autoscaler (a worker not heard from
//! for a lease period shows as unresponsive); leases never depend on it, so
//! a process that dies with a batch unwritten loses at most one period of
//! it. The period is at most half a heartbeat interval, so a live worker's
//! `last_seen` is never older than a heartbeat and a half.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::state::AppState;

/// The longest a heard worker waits to be written.
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// Each worker heard from since the last write, and when (ms).
#[derive(Default)]
pub struct WorkerLiveness {
    heard: Mutex<HashMap<String, i64>>,
}

impl WorkerLiveness {
    pub fn heard(&self, worker_id: &str, now: i64) {
        let mut heard = self.heard.lock().expect("liveness lock");
        match heard.get_mut(worker_id) {
            Some(at) => *at = (*at).max(now),
            None => {
                heard.insert(worker_id.to_string(), now);
            }
        }
    }

    fn take(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.heard.lock().expect("liveness lock"))
            .into_iter()
            .collect()
    }
}

/// Writes the workers heard from, once per period, until the process ends.
pub async fn run(state: AppState) {
    let period = (state.config.heartbeat_interval() / 2).min(MAX_PERIOD);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let heard = state.liveness.take();
        if heard.is_empty() {
            continue;
        }
        if let Err(error) = state.store.touch_workers(&heard).await {
            // Only `last_seen` is late; the next period writes them again
            // if they are still heard.
            tracing::warn!(%error, workers = heard.len(), "cannot record when workers were last heard from");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerLiveness;

    #[test]
    fn each_worker_is_written_once_per_period() {
        let liveness = WorkerLiveness::default();
        liveness.heard("w1", 10);
        liveness.heard("w2", 11);
        liveness.heard("w1", 12);
        let mut heard = liveness.take();
        heard.sort();
        assert_eq!(heard, [("w1".to_string(), 12), ("w2".to_string(), 11)]);
        assert!(liveness.take().is_empty(), "the next period starts empty");
    }
}
