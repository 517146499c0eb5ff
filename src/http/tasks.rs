//! `/tasks` over REST: create (one or a batch), list, show, edit, cancel, route afresh and
//! explain tasks. The work is [`crate::service::tasks`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::handoff::Handoff;
use crate::domain::input::{CreateBatch, CreateTask, NoteBody, PatchTask};
use crate::domain::{Principal, Task};
use crate::error::{ApiResult, Problem};
use crate::service::tasks::{self, BatchCreated, ListQuery, TaskDetail};
use crate::store::{TaskPage, Why};

use super::extract::{Json, Query};
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(create_batch))
        .routes(routes!(get_task, patch_task))
        .routes(routes!(why))
        .routes(routes!(handoff))
        .routes(routes!(cancel))
        .routes(routes!(reroute))
}

/// Create a task. Idempotent by `key`: if the key exists, the existing task comes back with 200.
#[utoipa::path(post, path = "/tasks", tag = "tasks", request_body = CreateTask,
    responses((status = 201, body = Task, description = "created"),
              (status = 200, body = Task, description = "a task with this key already existed"),
              (status = 422, body = Problem, description = "invalid field")),
    security(("bearer" = [])))]
pub async fn create_task(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<CreateTask>,
) -> ApiResult<impl IntoResponse> {
    let (task, created) = tasks::create(&state, &who, body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(task)))
}

/// Create up to 1,000 tasks at once, all or nothing; `depends_on` may name keys of the batch.
#[utoipa::path(post, path = "/tasks/batch", tag = "tasks", request_body = CreateBatch,
    responses((status = 201, body = BatchCreated), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create_batch(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<CreateBatch>,
) -> ApiResult<impl IntoResponse> {
    let created = tasks::create_batch(&state, &who, body).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// List tasks, newest first, with filters and cursor paging.
#[utoipa::path(get, path = "/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, body = TaskPage), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_tasks(
    State(state): State<AppState>,
    _who: Principal,
    Query(query): Query<ListQuery>,
) -> ApiResult<axum::Json<TaskPage>> {
    Ok(axum::Json(tasks::list(&state, query).await?))
}

/// One task (by id or key) with its recent events.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = TaskDetail), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_task(
    State(state): State<AppState>,
    _who: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TaskDetail>> {
    Ok(axum::Json(tasks::detail(&state, &id).await?))
}

/// Edit a task that is not in progress (admin).
#[utoipa::path(patch, path = "/tasks/{id}", tag = "tasks", request_body = PatchTask,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn patch_task(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<PatchTask>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(tasks::patch(&state, &who, &id, body).await?))
}

/// Why a task is or is not claimable, and what was decided about it.
#[utoipa::path(get, path = "/tasks/{id}/why", tag = "tasks",
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Why), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn why(
    State(state): State<AppState>,
    _who: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Why>> {
    Ok(axum::Json(tasks::explain(&state, &id).await?))
}

/// What earlier attempts at the task left for its next holder: holder, how each ended and why,
/// its last progress and notes, and for spawned runs their branch and the end of their log.
#[utoipa::path(get, path = "/tasks/{id}/handoff", tag = "tasks",
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Handoff), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn handoff(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Handoff>> {
    Ok(axum::Json(
        crate::service::handoff::show(&state, &who, &id).await?,
    ))
}

/// Cancel a task and its unfinished subtasks (an admin, or the agent that created every
/// unfinished task in the subtree while nobody else holds a live lease in it).
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks", request_body = NoteBody,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 403, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<NoteBody>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(tasks::cancel(&state, &who, &id, body).await?))
}

/// Route a task afresh (admin): the router forgets its decision and the next assignment pass,
/// which runs at once, decides again (after agent types were added, say).
#[utoipa::path(post, path = "/tasks/{id}/reroute", tag = "tasks",
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Task), (status = 403, body = Problem),
              (status = 409, body = Problem, description = "the task is final")),
    security(("bearer" = [])))]
pub async fn reroute(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(tasks::reroute(&state, &who, &id).await?))
}
