//! `/loops` and `/system`: the scheduled loops (list, run now) and the host status the
//! system-status loop samples.

use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{Principal, Role};
use crate::error::{ApiError, ApiResult, Problem};
use crate::host::HostStatus;
use crate::loops::{LoopInfo, RunNowError};
use crate::service::access::require;
use crate::store::LoopRun;

use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_loops))
        .routes(routes!(run_loop))
        .routes(routes!(system))
}

/// All loops.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoopPage {
    /// The loops, in definition order.
    pub items: Vec<LoopInfo>,
    /// Always null: the list is not paged.
    pub next_cursor: Option<String>,
}

/// List loops with their schedule, last run and next run.
#[utoipa::path(get, path = "/loops", tag = "loops",
    responses((status = 200, body = LoopPage)), security(("bearer" = [])))]
pub async fn list_loops(State(state): State<AppState>, _who: Principal) -> ApiResult<axum::Json<LoopPage>> {
    Ok(axum::Json(LoopPage {
        items: state.loops.list().await?,
        next_cursor: None,
    }))
}

/// Run a loop now (admin); answers with the run's record.
#[utoipa::path(post, path = "/loops/{name}/run", tag = "loops",
    params(("name" = String, Path, description = "loop name")),
    responses((status = 200, body = LoopRun), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "a run is in progress")),
    security(("bearer" = [])))]
pub async fn run_loop(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<LoopRun>> {
    require(&who, Role::Admin)?;
    match state.loops.run_now(&name).await {
        Ok(run) => Ok(axum::Json(run)),
        Err(RunNowError::NotFound(_)) => Err(ApiError::NotFound(format!("no loop named {name:?}"))),
        Err(RunNowError::Busy(_)) => Err(ApiError::Conflict(format!("loop {name:?} is running already"))),
        Err(RunNowError::Store(e)) => Err(e.into()),
    }
}

/// Host CPU, memory and disk as last sampled, with the recent series and the overload verdict.
#[utoipa::path(get, path = "/system", tag = "loops",
    responses((status = 200, body = HostStatus)), security(("bearer" = [])))]
pub async fn system(State(state): State<AppState>, _who: Principal) -> axum::Json<HostStatus> {
    axum::Json(state.loops.context().host.status())
}
