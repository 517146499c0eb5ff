//! `/tasks`: create (one or a batch), list, show, edit, cancel and explain tasks. The work of
//! the handlers the MCP tools share lives in plain functions at the end.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::input::{CreateBatch, CreateTask, NoteBody, PatchTask};
use crate::domain::{Event, InputError, Principal, Role, Route, Status, Task, TaskRef};
use crate::error::{ApiResult, Problem};
use crate::store::{TaskFilter, TaskPage, Why};

use super::auth::{check_new_task_scope, check_scope, require};
use super::extract::{Json, Query};
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(create_batch))
        .routes(routes!(get_task, patch_task))
        .routes(routes!(why))
        .routes(routes!(cancel))
        .routes(routes!(reroute))
}

/// A task with its recent events.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDetail {
    /// The task.
    #[serde(flatten)]
    pub task: Task,
    /// Its most recent events, oldest first.
    pub events: Vec<Event>,
}

/// The tasks a batch created or found.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCreated {
    /// One per request item, in order (existing tasks for keys that already existed).
    pub tasks: Vec<Task>,
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
    let (task, created) = create(&state, &who, body).await?;
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
    require(&who, Role::Agent)?;
    let specs = body.parse()?;
    for spec in &specs {
        check_new_task_scope(&state, &who, spec.parent_id).await?;
    }
    let created = state.store.create_tasks(specs, &who, "tasks").await?;
    let tasks = created.into_iter().map(|(t, _)| t).collect();
    Ok((StatusCode::CREATED, axum::Json(BatchCreated { tasks })))
}

/// Filters for listing tasks.
#[derive(Debug, Deserialize, IntoParams, JsonSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Status, or several separated by commas (`pending`, `available`, `in_progress`, `blocked`,
    /// `completed`, `failed`, `cancelled`).
    status: Option<String>,
    /// Project.
    project: Option<String>,
    /// Priority, or several separated by commas (`P0`..`P3`).
    priority: Option<String>,
    /// Kind (`implementation`, `bug`, `test`, `docs`, …).
    kind: Option<String>,
    /// Required capability.
    capability: Option<String>,
    /// Route (`auto`, `agent`, `human`, `spawn`).
    route: Option<String>,
    /// Parent task id: list its subtasks.
    parent_id: Option<i64>,
    /// Text to find in the title or description, or an exact key.
    q: Option<String>,
    /// Page size, 1..500 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn split<T: std::str::FromStr<Err = String>>(
    field: &str,
    text: &Option<String>,
) -> Result<Vec<T>, InputError> {
    text.as_deref()
        .map(|t| {
            t.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<T>())
                .collect()
        })
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| InputError::new(field, e))
}

impl ListQuery {
    fn parse(self) -> Result<TaskFilter, InputError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(InputError::new("limit", "must be between 1 and 500"));
        }
        let before_id = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| InputError::new("cursor", "not a cursor returned by this API"))?,
            ),
        };
        if self.q.as_ref().is_some_and(|q| q.len() > 200) {
            return Err(InputError::new("q", "longer than 200 bytes"));
        }
        Ok(TaskFilter {
            status: split::<Status>("status", &self.status)?,
            priority: split("priority", &self.priority)?,
            project: self.project,
            kind: self.kind,
            capability: self.capability.map(|c| c.to_ascii_lowercase()),
            route: self
                .route
                .map(|r| r.parse::<Route>().map_err(|e| InputError::new("route", e)))
                .transpose()?,
            parent_id: self.parent_id,
            q: self.q.filter(|q| !q.is_empty()),
            limit,
            before_id,
        })
    }
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
    Ok(axum::Json(list(&state, query).await?))
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
    Ok(axum::Json(detail(&state, &id).await?))
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
    require(&who, Role::Admin)?;
    let patch = body.parse()?;
    let id = state.task_id(&id).await?;
    Ok(axum::Json(state.store.patch_task(id, patch, &who).await?))
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
    Ok(axum::Json(explain(&state, &id).await?))
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
    require(&who, Role::Agent)?;
    let note = body.parse()?;
    let id = state.task_id(&id).await?;
    check_scope(&state, &who, id).await?;
    Ok(axum::Json(state.store.cancel_task(id, &who, note).await?))
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
    require(&who, Role::Admin)?;
    let id = state.task_id(&id).await?;
    Ok(axum::Json(state.store.reroute(id, &who).await?))
}

// The work itself, shared by the REST handlers above and the MCP tools.

/// Creates a task for `who`; returns it and whether it is new (false: its key existed).
pub async fn create(state: &AppState, who: &Principal, body: CreateTask) -> ApiResult<(Task, bool)> {
    require(who, Role::Agent)?;
    let spec = body.parse()?;
    check_new_task_scope(state, who, spec.parent_id).await?;
    Ok(state.store.create_task(spec, who).await?)
}

/// One page of tasks matching `query`.
pub async fn list(state: &AppState, query: ListQuery) -> ApiResult<TaskPage> {
    Ok(state.store.list_tasks(&query.parse()?).await?)
}

/// One task (by id or key) with its recent events.
pub async fn detail(state: &AppState, id: &str) -> ApiResult<TaskDetail> {
    let task = state.store.task(&TaskRef::parse(id)).await?;
    let events = state.store.task_events(task.id, 100).await?;
    Ok(TaskDetail { task, events })
}

/// Why a task (by id or key) is or is not claimable: the registry's answer, with what the
/// spawner would do with it now put first.
pub async fn explain(state: &AppState, id: &str) -> ApiResult<Why> {
    let task = state.store.task(&TaskRef::parse(id)).await?;
    let facts = state.store.why_facts(&task).await?;
    let human_kinds = &state.store.options().human_kinds;
    let mut why = crate::store::why::explain(&task, facts, human_kinds, crate::domain::Timestamp::now());
    let spawner = &state.loops.context().spawner;
    if let Some(line) = spawner.explain(&task, why.routing.as_ref()).await? {
        why.reasons.insert(0, line);
    }
    Ok(why)
}
