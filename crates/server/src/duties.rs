//! The singleton duties: work exactly one control plane process must do at
//! a time: the lease reaper (which also cleans up: it is what ends the runs
//! of vanished workers), and the autoscalers of `--autoscale`, which tick
//! only while `AppState::holds_duties` says so.
//!
//! On SQLite there is one process, so it does them. On PostgreSQL every
//! replica competes for one advisory lock ([`DutyLock`]); the holder runs
//! the duties and checks every second that it still holds the lock. When
//! the holder dies or is cut off from the database, PostgreSQL releases the
//! lock (at once for a closed connection, within seconds through TCP
//! keepalives for a silent one) and another replica takes it within a
//! second. A holder that cannot confirm its lock stops its duties first.
//!
//! A new holder's reaper starts with the start-up grace (every lease gets a
//! full period): the hand-over may have followed an outage during which no
//! worker could be heard.

use std::sync::atomic::Ordering;
use std::time::Duration;

use gantry_store::sql::replicas::DutyLock;

use crate::reaper;
use crate::state::AppState;

/// How often the holder checks its lock, and others try to take it.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A check that takes longer than this means the database is out of reach.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(state: AppState) {
    let Some(url) = state.config.database_url.clone() else {
        state.holds_duties.store(true, Ordering::SeqCst);
        reaper::run(state).await;
        return;
    };
    let mut last_error: Option<String> = None;
    loop {
        match tokio::time::timeout(CHECK_TIMEOUT * 5, DutyLock::try_acquire(&url)).await {
            Ok(Ok(Some(lock))) => {
                last_error = None;
                hold(&state, lock).await;
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                let error = error.to_string();
                if last_error.as_ref() != Some(&error) {
                    tracing::warn!(%error, "cannot reach the database to take the singleton duties; retrying");
                }
                last_error = Some(error);
            }
            Err(_) => tracing::warn!("the database did not answer a try for the singleton duties"),
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// Does the duties while the lock is ours.
async fn hold(state: &AppState, mut lock: DutyLock) {
    tracing::info!("this replica now does the singleton duties (lease reaper, autoscalers)");
    let duties = tokio::spawn(reaper::run(state.clone()));
    state.holds_duties.store(true, Ordering::SeqCst);
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        match tokio::time::timeout(CHECK_TIMEOUT, lock.check()).await {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => {
                tracing::warn!(%error, "lost the singleton duties' lock; stopping them");
            }
            Err(_) => tracing::warn!(
                "the database did not confirm the singleton duties' lock in time; stopping them"
            ),
        }
        state.holds_duties.store(false, Ordering::SeqCst);
        duties.abort();
        return;
    }
}
