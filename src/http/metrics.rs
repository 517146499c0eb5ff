//! `GET /metrics`: the server's metrics for Prometheus (OpenMetrics text), readable with any
//! valid token or `server.metrics_token`; and the middleware that counts HTTP requests. The
//! registry's contents are read at most every few seconds, never once per scrape.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::error::{ApiError, ApiResult};
use crate::telemetry::{AgentTypeLabel, HttpLabels, PriorityLabel, StatusLabel, CONTENT_TYPE};
use crate::token::hash_token;

use super::auth::{bearer, checked_principal};
use super::throttle::ClientIp;
use super::AppState;

/// How long the registry's figures (tasks, live runs) are reused between scrapes.
const SNAPSHOT_TTL: Duration = Duration::from_secs(5);

/// The routes of this file.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Middleware: counts every answered request by route template, method and status.
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    // Standard methods only: anything a client makes up would be a new series, without end.
    let method = match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => req.method().as_str(),
        _ => "other",
    }
    .to_string();
    let response = next.run(req).await;
    state
        .store
        .options()
        .telemetry
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn metrics(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    let token = bearer(req.headers()).ok_or_else(|| {
        ApiError::Unauthorized("missing bearer token: send `Authorization: Bearer <token>`".into())
    })?;
    let metrics_token = state.config.server.metrics_token.as_ref();
    let is_metrics_token =
        metrics_token.is_some_and(|t| bool::from(t.expose().as_bytes().ct_eq(token.as_bytes())));
    if !is_metrics_token {
        // Any valid token reads them: viewers are the least role there is.
        checked_principal(&state, ClientIp::of(req.extensions()), &hash_token(token)).await?;
    }
    refresh(&state).await?;
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.store.options().telemetry.render(),
    )
        .into_response())
}

/// Sets the gauges: the registry's figures when the last reading is older than
/// [`SNAPSHOT_TTL`], the process's and the streams' every time.
async fn refresh(state: &AppState) -> ApiResult<()> {
    let telemetry = &state.store.options().telemetry;
    // One refresh at a time: two at once would both add the same CPU time, or one would see
    // the other's families half refilled.
    let mut last = state.metrics_read_at.lock().await;
    if last.is_none_or(|at| at.elapsed() >= SNAPSHOT_TTL) {
        let stats = state.store.stats().await?;
        for (status, n) in &stats.by_status {
            telemetry
                .tasks
                .get_or_create(&StatusLabel {
                    status: status.clone(),
                })
                .set(*n);
        }
        telemetry.open_tasks.clear();
        for (priority, n) in &stats.open_by_priority {
            telemetry
                .open_tasks
                .get_or_create(&PriorityLabel {
                    priority: priority.clone(),
                })
                .set(*n);
        }
        let (_, by_type) = state.store.live_run_counts().await?;
        telemetry.runs_live.clear();
        for (agent_type, n) in by_type {
            telemetry
                .runs_live
                .get_or_create(&AgentTypeLabel { agent_type })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        *last = Some(Instant::now());
    }
    telemetry
        .long_polls
        .set(i64::try_from(state.store.bus().work_waiters()).unwrap_or(i64::MAX));
    telemetry
        .streams
        .set(i64::try_from(state.streams.open()).unwrap_or(i64::MAX));
    let pid = Pid::from_u32(std::process::id());
    if let Ok(mut system) = System::new() {
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        if let Some(process) = system.process(pid) {
            telemetry
                .resident_memory
                .set(i64::try_from(process.memory()).unwrap_or(i64::MAX));
            let used = process.accumulated_cpu_time() as f64 / 1000.0;
            let counted = telemetry.cpu_seconds.get();
            if used > counted {
                telemetry.cpu_seconds.inc_by(used - counted);
            }
        }
    }
    Ok(())
}
