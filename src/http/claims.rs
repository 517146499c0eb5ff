//! Claims and work under a lease over REST: claim, claim-next (with long poll), progress,
//! complete, fail, release, block and unblock. The work is [`crate::service::claims`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::input::{
    BlockTask, ClaimNext, ClaimTask, CompleteTask, FailTask, NoteBody, ReleaseTask, ReportProgress,
};
use crate::domain::{Principal, Task};
use crate::error::{ApiResult, Problem};
use crate::service::claims;
use crate::store::Claimed;

use super::extract::Json;
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(claim))
        .routes(routes!(claim_next))
        .routes(routes!(progress))
        .routes(routes!(complete))
        .routes(routes!(fail))
        .routes(routes!(release))
        .routes(routes!(block))
        .routes(routes!(unblock))
}

/// Claim this task. Returns the lease; keep its `fence` for every later call.
#[utoipa::path(post, path = "/tasks/{id}/claim", tag = "claims", request_body = ClaimTask,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Claimed),
              (status = 409, body = Problem, description = "`already_claimed` or `not_ready`")),
    security(("bearer" = [])))]
pub async fn claim(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<ClaimTask>,
) -> ApiResult<axum::Json<Claimed>> {
    Ok(axum::Json(claims::claim(&state, &who, &id, body).await?))
}

/// Claim the best ready task for the caller (capabilities, then priority, then age).
/// With `wait_seconds`, waits up to that long for work to appear. 204 when there is none.
#[utoipa::path(post, path = "/claims/next", tag = "claims", request_body = ClaimNext,
    responses((status = 200, body = Claimed), (status = 204, description = "no work fits"),
              (status = 429, body = Problem, description = "too many long polls waiting")),
    security(("bearer" = [])))]
pub async fn claim_next(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<ClaimNext>,
) -> ApiResult<Response> {
    Ok(match claims::claim_next(&state, &who, body).await? {
        Some(claimed) => axum::Json(claimed).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Report progress (or, with an empty report, a heartbeat); extends the lease.
#[utoipa::path(post, path = "/tasks/{id}/progress", tag = "claims", request_body = ReportProgress,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 409, body = Problem, description = "`lease_lost`")),
    security(("bearer" = [])))]
pub async fn progress(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<ReportProgress>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(claims::progress(&state, &who, &id, body).await?))
}

/// Complete the task under your lease.
#[utoipa::path(post, path = "/tasks/{id}/complete", tag = "claims", request_body = CompleteTask,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 409, body = Problem, description = "`lease_lost`")),
    security(("bearer" = [])))]
pub async fn complete(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<CompleteTask>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(claims::complete(&state, &who, &id, body).await?))
}

/// Fail the attempt under your lease; retryable failures come back after a backoff.
#[utoipa::path(post, path = "/tasks/{id}/fail", tag = "claims", request_body = FailTask,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 409, body = Problem, description = "`lease_lost`")),
    security(("bearer" = [])))]
pub async fn fail(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<FailTask>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(claims::fail(&state, &who, &id, body).await?))
}

/// Hand the task back untouched (the attempt is not counted).
#[utoipa::path(post, path = "/tasks/{id}/release", tag = "claims", request_body = ReleaseTask,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 409, body = Problem, description = "`lease_lost`")),
    security(("bearer" = [])))]
pub async fn release(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<ReleaseTask>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(claims::release(&state, &who, &id, body).await?))
}

/// Block the task on a decision only a person can make.
#[utoipa::path(post, path = "/tasks/{id}/block", tag = "claims", request_body = BlockTask,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn block(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<BlockTask>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(claims::block(&state, &who, &id, body).await?))
}

/// Lift a block (people and admins).
#[utoipa::path(post, path = "/tasks/{id}/unblock", tag = "claims", request_body = NoteBody,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn unblock(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<NoteBody>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(claims::unblock(&state, &who, &id, body).await?))
}
