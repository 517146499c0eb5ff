//! Claims and work under a lease: claim, claim-next (with long poll), progress, complete,
//! fail, release, block and unblock. The work itself lives in plain functions below the
//! handlers, which the MCP tools call too.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::input::{
    BlockTask, ClaimNext, ClaimTask, CompleteTask, FailTask, NoteBody, ReleaseTask, ReportProgress,
};
use crate::domain::{Principal, Role, Task, Timestamp};
use crate::error::{ApiResult, Problem};
use crate::store::{ClaimFilter, Claimed, Wants};

use super::auth::{check_scope, require};
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
    Ok(axum::Json(claim_task(&state, &who, &id, body).await?))
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
    Ok(match claim_next_task(&state, &who, body).await? {
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
    Ok(axum::Json(report_progress(&state, &who, &id, body).await?))
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
    Ok(axum::Json(complete_task(&state, &who, &id, body).await?))
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
    Ok(axum::Json(fail_task(&state, &who, &id, body).await?))
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
    Ok(axum::Json(release_task(&state, &who, &id, body).await?))
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
    Ok(axum::Json(block_task(&state, &who, &id, body).await?))
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
    require(&who, Role::Agent)?;
    let note = body.parse()?;
    let id = acting_on(&state, &who, &id).await?;
    Ok(axum::Json(state.store.unblock(id, &who, note).await?))
}

// The work itself, shared by the REST handlers above and the MCP tools, so both check roles,
// scopes and input the same way and reach the store through one path.

/// Resolves the task an agent acts on (id or key) and refuses a run token outside its scope.
async fn acting_on(state: &AppState, who: &Principal, id: &str) -> ApiResult<i64> {
    let id = state.task_id(id).await?;
    check_scope(state, who, id).await?;
    Ok(id)
}

/// Claims task `id` (id or key) for `who`.
pub async fn claim_task(state: &AppState, who: &Principal, id: &str, body: ClaimTask) -> ApiResult<Claimed> {
    require(who, Role::Agent)?;
    let lease = body
        .parse()?
        .map(Duration::from_secs)
        .unwrap_or(state.default_lease());
    let id = acting_on(state, who, id).await?;
    Ok(state.store.claim_task(id, who, lease).await?)
}

/// Claims the best ready task for `who`, waiting up to `wait_seconds` for work to appear;
/// `None` when nothing fits by then (or the server is shutting down).
pub async fn claim_next_task(
    state: &AppState,
    who: &Principal,
    body: ClaimNext,
) -> ApiResult<Option<Claimed>> {
    claim_next_unless(state, who, body, &CancellationToken::new()).await
}

/// [`claim_next_task`] for a caller that may stop waiting: once `give_up` is cancelled, no
/// further attempt is made and the answer is `None`. An attempt already under way is finished,
/// never cut off half-done, so the caller can tell whether it holds a lease it must hand back.
pub async fn claim_next_unless(
    state: &AppState,
    who: &Principal,
    body: ClaimNext,
    give_up: &CancellationToken,
) -> ApiResult<Option<Claimed>> {
    require(who, Role::Agent)?;
    if let Some(scope) = who.scope {
        return Err(crate::error::ApiError::Forbidden(format!(
            "this token belongs to the run of task #{scope}; it cannot claim other work"
        )));
    }
    let spec = body.parse()?;
    // Held while this call may wait.
    let _waiting = match spec.wait_seconds {
        0 => None,
        _ => Some(state.streams.start_long_poll(&who.name)?),
    };
    let lease = spec
        .lease_seconds
        .map(Duration::from_secs)
        .unwrap_or(state.default_lease());
    let filter = ClaimFilter {
        capabilities: spec.capabilities.unwrap_or_else(|| who.capabilities.clone()),
        projects: spec.projects,
    };
    let deadline = Instant::now() + Duration::from_secs(spec.wait_seconds);
    // In line before the first attempt, so that work created in between is not missed; new work
    // wakes only waiters that could take it, one per task, first come first served.
    let mut waiting = state.store.bus().waiter(Wants {
        capabilities: filter.capabilities.clone(),
        projects: filter.projects.clone(),
        person: who.is_person(),
    });
    let mut shutdown = state.shutdown.clone();
    loop {
        // A lease claimed once shutdown has started, or after the caller gave up, would reach
        // nobody: it would sit unused until it expired, with an attempt spent.
        if *shutdown.borrow_and_update() || give_up.is_cancelled() {
            return Ok(None);
        }
        if spec.wait_seconds > 0 {
            waiting.arm();
        }
        let attempt = Timestamp::now();
        let claimed = state.store.claim_next(who, &filter, lease).await?;
        let again = waiting.after_attempt(claimed.as_ref().map(|c| c.task.id));
        if claimed.is_some() {
            return Ok(claimed);
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        if again {
            continue;
        }
        // Sleep until fitting work is announced, a backoff or lease runs out, or the deadline.
        let mut until = deadline;
        if let Some(at) = state.store.next_timed_wakeup(attempt).await? {
            let ms = (at.millis() - Timestamp::now().millis()).max(0) as u64;
            until = until.min(Instant::now() + Duration::from_millis(ms + 5));
        }
        tokio::select! {
            _ = waiting.woken() => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = shutdown.changed() => {}
            _ = give_up.cancelled() => {}
        }
    }
}

/// Records progress (or a heartbeat) on a task `who` holds; renews the lease.
pub async fn report_progress(
    state: &AppState,
    who: &Principal,
    id: &str,
    body: ReportProgress,
) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let spec = body.parse()?;
    let id = acting_on(state, who, id).await?;
    Ok(state.store.report_progress(id, who, spec).await?)
}

/// Completes a task `who` holds.
pub async fn complete_task(
    state: &AppState,
    who: &Principal,
    id: &str,
    body: CompleteTask,
) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let spec = body.parse()?;
    let id = acting_on(state, who, id).await?;
    Ok(state.store.complete(id, who, spec).await?)
}

/// Fails the attempt on a task `who` holds.
pub async fn fail_task(state: &AppState, who: &Principal, id: &str, body: FailTask) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let (fence, reason, retryable) = body.parse()?;
    let id = acting_on(state, who, id).await?;
    Ok(state.store.fail(id, who, fence, reason, retryable).await?)
}

/// Hands back a task `who` holds.
pub async fn release_task(state: &AppState, who: &Principal, id: &str, body: ReleaseTask) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let (fence, note) = body.parse()?;
    let id = acting_on(state, who, id).await?;
    Ok(state.store.release(id, who, fence, note).await?)
}

/// Blocks a task on a decision only a person can make.
pub async fn block_task(state: &AppState, who: &Principal, id: &str, body: BlockTask) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let (fence, reason) = body.parse()?;
    let id = acting_on(state, who, id).await?;
    Ok(state.store.block(id, who, fence, reason).await?)
}
