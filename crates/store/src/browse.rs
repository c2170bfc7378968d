//! Reads for browsing (the web UI): runs filtered and paged, and a log read
//! from its end. Read-only; nothing here changes the store.

use async_trait::async_trait;
use gantry_wire::run::{RunState, RunType};

use crate::{LogChunk, Result, RunRecord};

/// Which runs, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunPage {
    pub pool_id: Option<String>,
    pub stack_id: Option<String>,
    pub state: Option<RunState>,
    pub run_type: Option<RunType>,
    /// Only runs not yet in a terminal state.
    pub active_only: bool,
    /// Only runs older than this run (keyset paging: the last ID of the
    /// previous page). An unknown ID gives an empty page.
    pub before: Option<String>,
    /// At most this many (0 means 50; capped at 500).
    pub limit: u32,
}

#[async_trait]
pub trait BrowseStore: Send + Sync + 'static {
    /// Runs matching `page`, newest (latest queued) first.
    async fn page_runs(&self, page: &RunPage) -> Result<Vec<RunRecord>>;
    /// The end of a run's log: the chunks numbered `upto` and below (all
    /// when `None`), walking back from the highest until about `max_bytes`
    /// (at least one chunk) or a gap; returned in order.
    async fn read_log_tail(
        &self,
        run_id: &str,
        upto: Option<u64>,
        max_bytes: usize,
    ) -> Result<Vec<LogChunk>>;
}
