//! `/runs`: spawned agent processes — list, show, their logs (tail and follow), and kill.
//! A followed log ends with its run, at shutdown, or when the session or token that opened it
//! stops being valid.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{InputError, Principal, Role, Run, RunStatus};
use crate::error::{ApiError, ApiResult, Problem};
use crate::service::access::require;
use crate::spawn::open_log_tail;

use super::credential::Credential;
use super::extract::{Path, Query};
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(run_log))
        .routes(routes!(kill_run))
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    /// The runs.
    pub items: Vec<Run>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for listing runs.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Run status.
    status: Option<String>,
    /// Task id.
    task_id: Option<i64>,
    /// Page size, 1..500 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
}

/// List spawned runs, newest first.
#[utoipa::path(get, path = "/runs", tag = "runs", params(RunQuery),
    responses((status = 200, body = RunPage), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn list_runs(
    State(state): State<AppState>,
    _who: Principal,
    Query(q): Query<RunQuery>,
) -> ApiResult<axum::Json<RunPage>> {
    let status = q
        .status
        .map(|s| s.parse::<RunStatus>().map_err(|e| InputError::new("status", e)))
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(InputError::new("limit", "must be between 1 and 500").into());
    }
    let mut items = state
        .store
        .list_runs(status, q.task_id, q.cursor, limit + 1)
        .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(axum::Json(RunPage { items, next_cursor }))
}

/// One run.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs", params(("id" = i64, Path, description = "run id")),
    responses((status = 200, body = Run), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_run(
    State(state): State<AppState>,
    _who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Run>> {
    Ok(axum::Json(state.store.run(id).await?))
}

/// How much of a log to show.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Show at most the last this many bytes (default 65536).
    tail: Option<u64>,
    /// Keep the response open and stream new output until the run ends.
    follow: Option<bool>,
}

/// A run's output (stdout and stderr together), as plain text.
#[utoipa::path(get, path = "/runs/{id}/log", tag = "runs", params(("id" = i64, Path, description = "run id"), LogQuery),
    responses((status = 200, content_type = "text/plain", description = "the log"), (status = 404, body = Problem),
              (status = 429, body = Problem, description = "too many open streams (when following)")),
    security(("bearer" = [])))]
pub async fn run_log(
    State(state): State<AppState>,
    who: Principal,
    credential: Credential,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let run = state.store.run(id).await?;
    let path = state.loops.context().spawner.log_path(id);
    let mut file = match open_log_tail(&path, q.tail.unwrap_or(64 * 1024)).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let here = &state.store.options().node;
            return Err(ApiError::NotFound(
                match run.node.is_empty() || run.node == *here {
                    true => format!("run #{id} has no log (yet, or any more)"),
                    false => format!(
                        "run #{id} ran on node {}, which keeps its log; ask that node",
                        run.node
                    ),
                },
            ));
        }
        Err(e) => return Err(ApiError::Internal(e.into())),
    };
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !(q.follow.unwrap_or(false) && run.status.is_live()) {
        let mut out = Vec::new();
        file.read_to_end(&mut out)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        return Ok((text, out).into_response());
    }
    let slot = state.streams.open_stream(&who.name)?;
    let store = state.store.clone();
    let mut shutdown = state.shutdown.clone();
    let stream = async_stream_log(
        file,
        move || {
            let store = store.clone();
            async move { store.run(id).await.map(|r| r.status.is_live()).unwrap_or(false) }
        },
        async move {
            let _ = shutdown.changed().await;
        },
    );
    let stream = slot.hold(credential.limit(state, stream));
    Ok((text, Body::from_stream(stream)).into_response())
}

/// Streams a growing file until `live` says the run is over (then the rest) or shutdown.
fn async_stream_log<F, Fut>(
    file: tokio::fs::File,
    live: F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let state = (file, Some(live), Box::pin(shutdown));
    futures::stream::unfold(state, |(mut file, live, mut shutdown)| async move {
        let live = live?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => {}
                Ok(n) => return Some((Ok(buf[..n].to_vec()), (file, Some(live), shutdown))),
                Err(e) => return Some((Err(e), (file, None, shutdown))),
            }
            if !live().await {
                // Ended: send what remains, then stop.
                let mut rest = Vec::new();
                return match file.read_to_end(&mut rest).await {
                    Ok(_) if !rest.is_empty() => Some((Ok(rest), (file, None, shutdown))),
                    _ => None,
                };
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = &mut shutdown => return None,
            }
        }
    })
}

/// Stop a live run: TERM to its process group, KILL after the grace time (admin).
#[utoipa::path(post, path = "/runs/{id}/kill", tag = "runs", params(("id" = i64, Path, description = "run id")),
    responses((status = 202, body = Run, description = "stopping"), (status = 409, body = Problem, description = "not running")),
    security(("bearer" = [])))]
pub async fn kill_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    require(&who, Role::Admin)?;
    let run = state.store.run(id).await?;
    let here = &state.store.options().node;
    if run.ended_at.is_none() && !run.node.is_empty() && run.node != *here {
        return Err(ApiError::Conflict(format!(
            "run #{id} runs on node {}, not on {here}: ask that node to kill it",
            run.node
        )));
    }
    state
        .loops
        .context()
        .spawner
        .kill(id, &format!("killed by {}", who.name))
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(run)))
}
