use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// At most this much log per response; clients come back for more.
const MAX_READ_BYTES: usize = 4 * 1024 * 1024;
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// The first chunk to return.
    #[serde(default)]
    from: u64,
    /// Seconds to wait for new output when there is none yet (tailing).
    #[serde(default)]
    wait: u64,
}

/// The run's log from chunk `from` on, as raw bytes. The `gantry-next-seq`
/// header says where to continue; `gantry-log-complete: true` says the run
/// ended and nothing more will come.
#[utoipa::path(get, path = "/runs/{run}/logs", tag = "runs",
    params(("run" = String, Path), ("from" = Option<u64>, Query, description = "First chunk (default 0)"),
           ("wait" = Option<u64>, Query, description = "Seconds to wait for new output (max 30)")),
    responses((status = 200, description = "Log bytes", content_type = "application/octet-stream"),
              (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn read_logs(
    _user: User,
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Response> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(query.wait).min(MAX_WAIT);
    loop {
        // Arm the wake-up before reading, so a chunk landing in between is not missed.
        let signal = state.signals.run(&run_id);
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let run = state
            .store
            .find_run(&run_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("run {run_id:?}")))?;
        let chunks = state
            .store
            .read_log_chunks(&run_id, query.from, MAX_READ_BYTES)
            .await?;
        let next = query.from + chunks.len() as u64;
        // An ended run's log is complete only when nothing is stored past
        // what this answer reaches: a chunk its worker never uploaded (it
        // was lost) is a gap, reported as such, not an end.
        let (complete, gap) = if run.state.is_terminal() {
            match state.store.next_stored_log_seq(&run_id, next).await? {
                None => (true, None),
                Some(after) if after > next => (false, Some((next, after))),
                Some(_) => (false, None),
            }
        } else {
            (false, None)
        };
        if !chunks.is_empty()
            || complete
            || gap.is_some()
            || tokio::time::Instant::now() >= deadline
        {
            let mut body = Vec::with_capacity(chunks.iter().map(|c| c.data.len()).sum());
            for chunk in chunks {
                body.extend_from_slice(&chunk.data);
            }
            return Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (
                        header::HeaderName::from_static(gantry_wire::NEXT_SEQ_HEADER),
                        next.to_string(),
                    ),
                    (
                        header::HeaderName::from_static(gantry_wire::LOG_COMPLETE_HEADER),
                        complete.to_string(),
                    ),
                    (
                        header::HeaderName::from_static("gantry-run-state"),
                        run.state.as_str().to_string(),
                    ),
                    (
                        header::HeaderName::from_static(gantry_wire::LOG_GAP_HEADER),
                        gap.map_or(String::new(), |(from, to)| format!("{from}-{to}")),
                    ),
                ],
                Body::from(body),
            )
                .into_response());
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}
