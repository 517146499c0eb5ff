//! Tasks as records: creating them (one or a batch, with dependencies), reading, listing and
//! editing them, the scope of a run's token, and the facts `why` and the overview are made of.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::input::{TaskPatch, TaskSpec};
use crate::domain::reservation::Clash;
use crate::domain::{Event, Principal, Priority, Route, Status, Task, TaskRef, Timestamp};

use super::{Routing, StoreResult};

/// Filters for listing tasks; all optional.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Any of these statuses.
    pub status: Vec<Status>,
    /// This project.
    pub project: Option<String>,
    /// Any of these priorities.
    pub priority: Vec<Priority>,
    /// This kind.
    pub kind: Option<String>,
    /// Requires this capability.
    pub capability: Option<String>,
    /// This route.
    pub route: Option<Route>,
    /// Subtasks of this task.
    pub parent_id: Option<i64>,
    /// Substring of title or description, or an exact key.
    pub q: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Tasks with ids below this (newest first paging).
    pub before_id: Option<i64>,
}

/// One page of tasks, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskPage {
    /// The tasks.
    pub items: Vec<Task>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A task linked to another (a dependency, a dependent), as `why` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DependencyState {
    /// Its id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// Its status.
    pub status: Status,
}

/// What `why` is made of, besides the task.
#[derive(Debug, Clone)]
pub struct WhyFacts {
    /// The tasks it depends on.
    pub dependencies: Vec<DependencyState>,
    /// The tasks that depend on it (at most 500).
    pub dependents: Vec<DependencyState>,
    /// The router's current decision.
    pub routing: Option<Routing>,
    /// Its recent events, oldest first.
    pub events: Vec<Event>,
    /// Another lease's reservation of a path it declares, which keeps claim-next from it.
    pub clash: Option<Clash>,
}

/// Claims and completions in one minute.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: Timestamp,
    /// `task.claimed` events in it.
    pub claimed: i64,
    /// `task.completed` events in it.
    pub completed: i64,
}

/// The overview's numbers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    /// Tasks per status (every status present, zero included).
    pub by_status: BTreeMap<String, i64>,
    /// Unfinished tasks per priority.
    pub open_by_priority: BTreeMap<String, i64>,
    /// Registered agents.
    pub agents: i64,
    /// Agents currently online.
    pub agents_online: i64,
    /// Spawned runs starting or running.
    pub live_runs: i64,
    /// The last 60 minutes, oldest first.
    pub per_minute: Vec<MinuteCount>,
}

/// Tasks as records.
#[async_trait::async_trait]
pub trait Tasks: Send + Sync {
    /// Creates tasks all or nothing, in order; `depends_on` may name keys from the same batch.
    /// A spec whose key exists already yields the existing task (`false`: not new). Errors name
    /// fields under `batch_prefix` (e.g. `tasks[3].`) when it is not empty.
    async fn create_tasks(
        &self,
        specs: Vec<TaskSpec>,
        creator: &Principal,
        batch_prefix: &str,
    ) -> StoreResult<Vec<(Task, bool)>>;

    /// Creates one task; returns it and whether it is new (false: its key already existed).
    async fn create_task(&self, spec: TaskSpec, creator: &Principal) -> StoreResult<(Task, bool)> {
        let mut created = self.create_tasks(vec![spec], creator, "").await?;
        Ok(created.remove(0))
    }

    /// One task by id or key.
    async fn task(&self, r: &TaskRef) -> StoreResult<Task>;

    /// A page of tasks matching `filter`, newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<TaskPage>;

    /// Edits a task that is not in progress; an edited task is routed afresh.
    async fn patch_task(&self, id: i64, patch: TaskPatch, actor: &Principal) -> StoreResult<Task>;

    /// True when `task_id` is `scope` or one of its subtasks (at any depth).
    async fn within_scope(&self, scope: i64, task_id: i64) -> StoreResult<bool>;

    /// The facts `why` explains task `task` with.
    async fn why_facts(&self, task: &Task) -> StoreResult<WhyFacts>;

    /// The overview's numbers as of now.
    async fn stats(&self) -> StoreResult<Stats>;

    /// Work waiting on people, most urgent first: available tasks routed to people or meant for
    /// them, and blocked tasks; each with its open email offer (notification id, person).
    async fn people_queue(&self, limit: i64) -> StoreResult<Vec<(Task, Option<(i64, String)>)>>;

    /// Tasks that wait on people: routed to them and available, blocked, or failed since `since`.
    async fn tasks_for_people(&self, since: Timestamp, limit: i64) -> StoreResult<Vec<Task>>;
}
