//! Declares silent workers lost: a run whose lease expired ends FAILED with
//! reason "worker lost", except a stack run caught APPLYING, which becomes
//! LOST and keeps its stack (see `RunState::Lost`). A worker that comes
//! back later finds its lease gone and is told to abandon the run (fencing),
//! or, for a LOST run, resumes it.
//!
//! The reaper must never mistake its own absence for the workers': a lease
//! that ran out while the control plane was down, or frozen, says nothing
//! about the worker. So at start-up, and whenever a tick comes late (the
//! process was stopped, the machine suspended, the clock jumped), every
//! lease first gets one full lease period to be renewed.
//!
//! It also clears out what expired (registration nonces, worker sessions)
//! once a minute, so no request pays for that.

use std::time::{Duration, Instant, SystemTime};

use crate::state::{now_ms, AppState};

/// How often what expired is deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);

pub async fn run(state: AppState) {
    // Check often enough that a run fails within ~5% of the lease timeout.
    let period =
        (state.config.lease_timeout / 20).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pause = PauseDetector::new(period);
    grace(&state, "the control plane started").await;
    let mut purged_at: Option<Instant> = None;
    loop {
        ticker.tick().await;
        if purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
            purged_at = Some(Instant::now());
            match state.store.purge_expired(now_ms()).await {
                Ok(0) => {}
                Ok(rows) => tracing::debug!(rows, "expired nonces and sessions deleted"),
                Err(error) => tracing::warn!(%error, "cannot delete expired nonces and sessions"),
            }
        }
        if let Some(gap) = pause.check() {
            grace(
                &state,
                &format!(
                    "the control plane was paused or its clock jumped ({} between checks)",
                    humantime::format_duration(round_ms(gap))
                ),
            )
            .await;
            continue;
        }
        match state.store.expire_leases(now_ms()).await {
            Ok(expired) => {
                for run in expired {
                    let worker_id = run.worker_id.as_deref().unwrap_or("");
                    if run.state == gantry_wire::run::RunState::Lost {
                        tracing::error!(run_id = %run.id, worker_id, stack = run.stack_name.as_deref().unwrap_or(""),
                            "worker lost during an apply; the run is LOST and keeps its stack locked until the worker returns or an operator gives up on it");
                        state.signals.run_changed(&run.id);
                        continue;
                    }
                    tracing::warn!(run_id = %run.id, worker_id, "worker lost; run failed");
                    crate::metrics::run_ended(&state, &run);
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

/// Gives every lease a full period from now before it may be reaped.
async fn grace(state: &AppState, why: &str) {
    let until = now_ms() + state.config.lease_timeout.as_millis() as i64;
    match state.store.extend_leases(until).await {
        Ok(0) => {}
        Ok(moved) => tracing::warn!(
            leases = moved,
            "{why}: every lease gets {} to be renewed before its worker is judged lost",
            humantime::format_duration(state.config.lease_timeout)
        ),
        Err(error) => tracing::error!(%error, "cannot extend the leases after a pause"),
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Notices that the reaper itself did not run for a while: a tick much
/// later than its period by the monotonic clock (the process was stopped,
/// starved or suspended), or a wall clock that moved differently from the
/// monotonic one (someone set the time). Leases are in wall-clock time.
struct PauseDetector {
    period: Duration,
    last: Instant,
    last_wall: SystemTime,
}

impl PauseDetector {
    fn new(period: Duration) -> PauseDetector {
        PauseDetector {
            period,
            last: Instant::now(),
            last_wall: SystemTime::now(),
        }
    }

    /// The gap, when the time since the last check shows a pause.
    fn check(&mut self) -> Option<Duration> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let elapsed = now.duration_since(self.last);
        let wall_elapsed = wall.duration_since(self.last_wall).unwrap_or(Duration::MAX); // the wall clock went back
        self.last = now;
        self.last_wall = wall;
        // A tick may run late under load; a pause is late by far more.
        let tolerance = (self.period * 5).max(Duration::from_secs(2));
        let drift = wall_elapsed.abs_diff(elapsed);
        (elapsed > self.period + tolerance || drift > tolerance)
            .then_some(elapsed.max(wall_elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_tick_or_a_clock_jump_is_a_pause_and_a_normal_tick_is_not() {
        let period = Duration::from_millis(100);
        let mut detector = PauseDetector::new(period);
        std::thread::sleep(period);
        assert_eq!(detector.check(), None, "one period late is normal");

        detector.last -= Duration::from_secs(10);
        detector.last_wall -= Duration::from_secs(10);
        let gap = detector.check().expect("a 10 s gap is a pause");
        assert!(gap >= Duration::from_secs(10), "{gap:?}");

        // The wall clock jumped forward by a minute while the monotonic
        // clock saw one period: leases would all look expired.
        std::thread::sleep(period);
        detector.last_wall -= Duration::from_secs(60);
        assert!(detector.check().is_some(), "a wall-clock jump is a pause");

        // The wall clock went back.
        std::thread::sleep(period);
        detector.last_wall += Duration::from_secs(60);
        assert!(detector.check().is_some(), "a clock set back is a pause");
        std::thread::sleep(period);
        assert_eq!(detector.check(), None);
    }
}
