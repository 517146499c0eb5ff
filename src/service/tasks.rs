//! Tasks: create (one or a batch), list, show, edit, cancel, route afresh and explain, with
//! their role, scope and input checks.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::input::{CreateBatch, CreateTask, NoteBody, PatchTask};
use crate::domain::{Event, InputError, Principal, Role, Route, Status, Task, TaskRef, Timestamp};
use crate::error::ApiResult;
use crate::store::{TaskFilter, TaskPage, Why};

use super::access::{acting_on, check_new_task_scope, require};
use super::Service;

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
    /// The filter this query asks for.
    pub fn parse(self) -> Result<TaskFilter, InputError> {
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

/// Creates a task for `who`; returns it and whether it is new (false: its key existed).
pub async fn create(service: &Service, who: &Principal, body: CreateTask) -> ApiResult<(Task, bool)> {
    require(who, Role::Agent)?;
    let spec = body.parse()?;
    check_new_task_scope(service, who, spec.parent_id).await?;
    Ok(service.store.create_task(spec, who).await?)
}

/// Creates up to 1,000 tasks at once, all or nothing.
pub async fn create_batch(service: &Service, who: &Principal, body: CreateBatch) -> ApiResult<BatchCreated> {
    require(who, Role::Agent)?;
    let specs = body.parse()?;
    for spec in &specs {
        check_new_task_scope(service, who, spec.parent_id).await?;
    }
    let created = service.store.create_tasks(specs, who, "tasks").await?;
    Ok(BatchCreated {
        tasks: created.into_iter().map(|(t, _)| t).collect(),
    })
}

/// One page of tasks matching `query`.
pub async fn list(service: &Service, query: ListQuery) -> ApiResult<TaskPage> {
    Ok(service.store.list_tasks(&query.parse()?).await?)
}

/// One task (by id or key) with its recent events.
pub async fn detail(service: &Service, id: &str) -> ApiResult<TaskDetail> {
    let task = service.store.task(&TaskRef::parse(id)).await?;
    let events = service.store.task_events(task.id, 100).await?;
    Ok(TaskDetail { task, events })
}

/// Edits a task that is not in progress (admins).
pub async fn patch(service: &Service, who: &Principal, id: &str, body: PatchTask) -> ApiResult<Task> {
    require(who, Role::Admin)?;
    let patch = body.parse()?;
    let id = service.task_id(id).await?;
    Ok(service.store.patch_task(id, patch, who).await?)
}

/// Cancels a task and its unfinished subtasks (the store decides whether `who` may).
pub async fn cancel(service: &Service, who: &Principal, id: &str, body: NoteBody) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let note = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service.store.cancel_task(id, who, note).await?)
}

/// Routes a task afresh (admins).
pub async fn reroute(service: &Service, who: &Principal, id: &str) -> ApiResult<Task> {
    require(who, Role::Admin)?;
    let id = service.task_id(id).await?;
    Ok(service.store.reroute(id, who).await?)
}

/// Why a task (by id or key) is or is not claimable: the registry's answer, with what the
/// spawner would do with it now put first.
pub async fn explain(service: &Service, id: &str) -> ApiResult<Why> {
    let task = service.store.task(&TaskRef::parse(id)).await?;
    let facts = service.store.why_facts(&task).await?;
    let human_kinds = &service.store.options().human_kinds;
    let mut why = crate::store::why::explain(&task, facts, human_kinds, Timestamp::now());
    let spawner = &service.loops.context().spawner;
    if let Some(line) = spawner.explain(&task, why.routing.as_ref()).await? {
        why.reasons.insert(0, line);
    }
    Ok(why)
}
