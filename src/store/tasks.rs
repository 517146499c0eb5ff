//! Creating, reading, listing and editing tasks (cancelling is in `cancel`).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use utoipa::ToSchema;

use crate::domain::event::NewEvent;
use crate::domain::input::{TaskPatch, TaskSpec};
use crate::domain::{InputError, Lease, Principal, Priority, Route, Status, Task, TaskRef, Timestamp};

use super::rows::{to_json, TaskRow, TASK_COLUMNS};
use super::{deps, Store, StoreError, StoreResult, Wake};

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
    /// Substring of title or description.
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

/// A dependency as `why` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DependencyState {
    /// Its id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// Its status.
    pub status: Status,
}

/// Why a task is or is not claimable right now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Why {
    /// The task.
    pub task_id: i64,
    /// Its status.
    pub status: Status,
    /// Could an agent claim it right now?
    pub claimable: bool,
    /// Plain-language reasons, most important first.
    pub reasons: Vec<String>,
    /// Its dependencies and their states.
    pub dependencies: Vec<DependencyState>,
    /// The tasks that depend on it, and their states.
    pub dependents: Vec<DependencyState>,
    /// The current lease, if any.
    pub lease: Option<Lease>,
    /// Claims used and allowed.
    pub attempts: i64,
    /// Claims allowed.
    pub max_attempts: i64,
    /// Capabilities a claimer needs.
    pub capabilities: Vec<String>,
    /// Routing and other decisions recorded for it, newest last.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<serde_json::Value>,
}

pub(super) async fn fetch(tx: &mut SqliteConnection, id: i64) -> StoreResult<Option<Task>> {
    let row: Option<TaskRow> = sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    row.map(Task::try_from).transpose()
}

pub(super) async fn fetch_existing(tx: &mut SqliteConnection, id: i64) -> StoreResult<Task> {
    fetch(tx, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task #{id}")))
}

impl Store {
    /// Creates one task; returns it and whether it is new (false: its key already existed).
    pub async fn create_task(&self, spec: TaskSpec, creator: &Principal) -> StoreResult<(Task, bool)> {
        let mut created = self.create_tasks(vec![spec], creator, "").await?;
        Ok(created.remove(0))
    }

    /// Creates tasks all or nothing, in order; `depends_on` may name keys from the same batch.
    /// Errors name fields under `field_prefix` (e.g. `tasks[3].`).
    pub async fn create_tasks(
        &self,
        specs: Vec<TaskSpec>,
        creator: &Principal,
        batch_prefix: &str,
    ) -> StoreResult<Vec<(Task, bool)>> {
        let now = Timestamp::now();
        let field = |i: usize, name: &str| {
            if batch_prefix.is_empty() {
                name.to_string()
            } else {
                format!("{batch_prefix}[{i}].{name}")
            }
        };
        let mut tx = self.begin_write().await?;
        let mut keys: HashMap<String, i64> = HashMap::new();
        let mut slots: Vec<(i64, bool)> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if let Some(key) = &spec.key {
                if keys.contains_key(key) {
                    return Err(InputError::new(
                        field(i, "key"),
                        format!("key {key:?} appears twice in the batch"),
                    )
                    .into());
                }
                let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM tasks WHERE key = ?")
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(id) = existing {
                    keys.insert(key.clone(), id);
                    slots.push((id, false));
                    continue;
                }
            }
            let mut depth = 0;
            if let Some(parent) = spec.parent_id {
                let found: Option<(i64, i64, String)> = sqlx::query_as(
                    "SELECT depth, (SELECT COUNT(*) FROM tasks c WHERE c.parent_id = p.id), status FROM tasks p WHERE id = ?",
                )
                .bind(parent)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((parent_depth, children, parent_status)) = found else {
                    return Err(InputError::new(field(i, "parent_id"), format!("no task #{parent}")).into());
                };
                if matches!(parent_status.as_str(), "completed" | "failed" | "cancelled") {
                    return Err(InputError::new(
                        field(i, "parent_id"),
                        format!("task #{parent} is {parent_status}; it takes no new subtasks"),
                    )
                    .into());
                }
                depth = parent_depth + 1;
                if depth > self.options.max_depth {
                    return Err(InputError::new(
                        field(i, "parent_id"),
                        format!(
                            "subtasks may nest {} levels deep; #{parent} is at level {parent_depth}",
                            self.options.max_depth
                        ),
                    )
                    .into());
                }
                if children >= self.options.max_fanout {
                    return Err(InputError::new(
                        field(i, "parent_id"),
                        format!(
                            "task #{parent} already has {children} subtasks (the limit is {})",
                            self.options.max_fanout
                        ),
                    )
                    .into());
                }
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO tasks (key, project, title, description, priority, kind, capabilities, \
                 acceptance_criteria, parent_id, route, status, max_attempts, created_by, created_at, updated_at, depth) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(&spec.key)
            .bind(&spec.project)
            .bind(&spec.title)
            .bind(&spec.description)
            .bind(spec.priority.rank())
            .bind(&spec.kind)
            .bind(to_json(&spec.capabilities))
            .bind(to_json(&spec.acceptance_criteria))
            .bind(spec.parent_id)
            .bind(spec.route.as_str())
            .bind(spec.max_attempts)
            .bind(&creator.name)
            .bind(now.millis())
            .bind(now.millis())
            .bind(depth)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(key) = &spec.key {
                keys.insert(key.clone(), id);
            }
            slots.push((id, true));
        }

        let mut edges: HashMap<i64, Vec<i64>> = HashMap::new();
        for (i, (spec, (id, new))) in specs.iter().zip(&slots).enumerate() {
            if *new {
                let ids = deps::resolve(&mut tx, &spec.depends_on, &field(i, "depends_on"), &keys).await?;
                edges.insert(*id, ids);
            }
        }
        if let Some(cycle) = deps::find_cycle(&edges) {
            // The ids die with the rolled-back transaction: name the tasks by key or position.
            let label = |id: &i64| {
                let i = slots.iter().position(|(slot, _)| slot == id).unwrap_or(0);
                specs[i]
                    .key
                    .clone()
                    .map(|k| format!("{k:?}"))
                    .unwrap_or_else(|| field(i, "").trim_end_matches('.').to_string())
            };
            let path: Vec<String> = cycle.iter().map(label).collect();
            let first = slots.iter().position(|(slot, _)| *slot == cycle[0]).unwrap_or(0);
            return Err(InputError::new(
                field(first, "depends_on"),
                format!("dependency cycle: {}", path.join(" → ")),
            )
            .into());
        }

        let mut events = Vec::new();
        let mut ready = Vec::new();
        for (id, new) in &slots {
            if !*new {
                continue;
            }
            let ids = &edges[id];
            deps::set(&mut tx, *id, ids).await?;
            let (status, reason) = deps::initial_status(&mut tx, ids).await?;
            sqlx::query("UPDATE tasks SET status = ?, status_reason = ? WHERE id = ?")
                .bind(status.as_str())
                .bind(&reason)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if status == Status::Available {
                ready.push(*id);
            }
            events.push(NewEvent::task(
                "task.created",
                *id,
                &creator.name,
                json!({"status": status, "reason": reason}),
            ));
        }
        let mut out = Vec::with_capacity(slots.len());
        for (id, new) in &slots {
            out.push((fetch_existing(&mut tx, *id).await?, *new));
        }
        // Event data carries the title and priority so live views need no extra fetch.
        for (event, (task, _)) in events.iter_mut().zip(out.iter().filter(|(_, new)| *new)) {
            event.data["title"] = json!(task.title);
            event.data["priority"] = json!(task.priority);
        }
        self.commit(tx, now, events, Wake::tasks(ready)).await?;
        Ok(out)
    }

    /// One task by id or key.
    pub async fn task(&self, r: &TaskRef) -> StoreResult<Task> {
        let row: Option<TaskRow> = match r {
            TaskRef::Id(id) => {
                sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await?
            }
            TaskRef::Key(key) => {
                sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE key = ?"))
                    .bind(key)
                    .fetch_optional(&self.reader)
                    .await?
            }
        };
        row.map(Task::try_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("task {r}")))
    }

    /// A page of tasks matching `filter`, newest first.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<TaskPage> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"));
        if !filter.status.is_empty() {
            q.push(" AND status IN (");
            let mut list = q.separated(", ");
            for s in &filter.status {
                list.push_bind(s.as_str());
            }
            q.push(")");
        }
        if !filter.priority.is_empty() {
            q.push(" AND priority IN (");
            let mut list = q.separated(", ");
            for p in &filter.priority {
                list.push_bind(p.rank());
            }
            q.push(")");
        }
        if let Some(project) = &filter.project {
            q.push(" AND project = ").push_bind(project);
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND kind = ").push_bind(kind);
        }
        if let Some(cap) = &filter.capability {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(tasks.capabilities) c WHERE c.value = ")
                .push_bind(cap)
                .push(")");
        }
        if let Some(route) = filter.route {
            q.push(" AND route = ").push_bind(route.as_str());
        }
        if let Some(parent) = filter.parent_id {
            q.push(" AND parent_id = ").push_bind(parent);
        }
        if let Some(text) = &filter.q {
            let pattern = format!(
                "%{}%",
                text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
            );
            q.push(" AND (title LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR description LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\' OR key = ")
                .push_bind(text.clone())
                .push(")");
        }
        if let Some(before) = filter.before_id {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit + 1);
        let rows: Vec<TaskRow> = q.build_query_as().fetch_all(&self.reader).await?;
        let mut items = rows
            .into_iter()
            .map(Task::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > filter.limit {
            items.truncate(filter.limit as usize);
            items.last().map(|t| t.id.to_string())
        } else {
            None
        };
        Ok(TaskPage { items, next_cursor })
    }

    /// Edits a task that is not in progress.
    pub async fn patch_task(&self, id: i64, patch: TaskPatch, actor: &Principal) -> StoreResult<Task> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let task = fetch_existing(&mut tx, id).await?;
        if task.status == Status::InProgress {
            return Err(StoreError::Conflict(format!(
                "task #{id} is in progress; release it before editing"
            )));
        }
        let mut changed: Vec<&str> = Vec::new();
        macro_rules! set {
            ($field:ident, $column:literal, $value:expr) => {
                if let Some(v) = $value {
                    sqlx::query(concat!("UPDATE tasks SET ", $column, " = ? WHERE id = ?"))
                        .bind(v)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    changed.push(stringify!($field));
                }
            };
        }
        set!(project, "project", patch.project);
        set!(title, "title", patch.title);
        set!(description, "description", patch.description);
        set!(priority, "priority", patch.priority.map(Priority::rank));
        set!(kind, "kind", patch.kind);
        set!(
            capabilities,
            "capabilities",
            patch.capabilities.as_ref().map(to_json)
        );
        set!(
            acceptance_criteria,
            "acceptance_criteria",
            patch.acceptance_criteria.as_ref().map(to_json)
        );
        set!(route, "route", patch.route.map(Route::as_str));
        set!(max_attempts, "max_attempts", patch.max_attempts);
        let mut woke = false;
        if let Some(refs) = &patch.depends_on {
            if task.status.is_final() {
                return Err(StoreError::Conflict(format!(
                    "task #{id} is {}; its dependencies can no longer change",
                    task.status
                )));
            }
            let ids = deps::resolve(&mut tx, refs, "depends_on", &HashMap::new()).await?;
            if let Some(dep) = deps::cycle_through(&mut tx, id, &ids).await? {
                return Err(InputError::new(
                    "depends_on",
                    format!("depending on #{dep} would make task #{id} depend on itself"),
                )
                .into());
            }
            deps::set(&mut tx, id, &ids).await?;
            if matches!(task.status, Status::Pending | Status::Available) {
                let (status, reason) = deps::initial_status(&mut tx, &ids).await?;
                sqlx::query("UPDATE tasks SET status = ?, status_reason = ? WHERE id = ?")
                    .bind(status.as_str())
                    .bind(reason)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                woke = status == Status::Available && task.status != Status::Available;
            }
            changed.push("depends_on");
        }
        // An edited task is routed afresh.
        sqlx::query("UPDATE tasks SET updated_at = ?, routed_to = NULL, routed_reason = NULL WHERE id = ?")
            .bind(now.millis())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let updated = fetch_existing(&mut tx, id).await?;
        woke |= patch.priority.is_some() || patch.capabilities.is_some();
        self.commit(
            tx,
            now,
            vec![NewEvent::task(
                "task.updated",
                id,
                &actor.name,
                json!({"fields": changed}),
            )],
            Wake::task_if(id, woke && updated.status == Status::Available),
        )
        .await?;
        Ok(updated)
    }

    /// Tasks linked to `id` by `sql` (one bound id; selects id, title, status).
    async fn linked(&self, sql: &str, id: i64) -> StoreResult<Vec<DependencyState>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(sql).bind(id).fetch_all(&self.reader).await?;
        rows.into_iter()
            .map(|(id, title, status)| {
                Ok(DependencyState {
                    id,
                    title,
                    status: status.parse().map_err(StoreError::Corrupt)?,
                })
            })
            .collect()
    }

    /// Explains whether a task is claimable and why.
    pub async fn why(&self, r: &TaskRef) -> StoreResult<Why> {
        let task = self.task(r).await?;
        let now = Timestamp::now();
        let dependencies = self
            .linked(
                "SELECT t.id, t.title, t.status FROM task_deps d JOIN tasks t ON t.id = d.depends_on_id \
                 WHERE d.task_id = ? ORDER BY t.id",
                task.id,
            )
            .await?;
        let dependents = self
            .linked(
                "SELECT t.id, t.title, t.status FROM task_deps d JOIN tasks t ON t.id = d.task_id \
                 WHERE d.depends_on_id = ? ORDER BY t.id LIMIT 500",
                task.id,
            )
            .await?;
        let mut reasons = Vec::new();
        match task.status {
            Status::Pending => {
                let waiting: Vec<String> = dependencies
                    .iter()
                    .filter(|d| d.status != Status::Completed)
                    .map(|d| format!("#{} ({})", d.id, d.status))
                    .collect();
                reasons.push(format!(
                    "waiting for dependencies to complete: {}",
                    waiting.join(", ")
                ));
            }
            Status::Available => match task.not_before {
                Some(t) if t > now => reasons.push(format!(
                    "backing off after a failed attempt; claimable from {}",
                    t.to_rfc3339()
                )),
                _ => reasons.push("ready: any agent with the required capabilities can claim it".into()),
            },
            Status::InProgress => {
                if let (Some(since), Some(at)) = (task.stalled_since, task.progress.updated_at) {
                    reasons.push(format!(
                        "stalled since {}: no progress reported since {}",
                        since.to_rfc3339(),
                        at.to_rfc3339()
                    ));
                }
                if let Some(lease) = &task.lease {
                    if lease.expires_at <= now {
                        reasons.push(format!(
                            "the lease of {} expired at {}; a claim takes it over",
                            lease.holder,
                            lease.expires_at.to_rfc3339()
                        ));
                    } else {
                        reasons.push(format!(
                            "held by {} (fence {}) until {}",
                            lease.holder,
                            lease.fence,
                            lease.expires_at.to_rfc3339()
                        ));
                    }
                }
            }
            Status::Blocked => reasons.push(format!(
                "blocked: {}",
                task.status_reason.as_deref().unwrap_or("needs a person")
            )),
            final_status => reasons.push(format!("{final_status}: a final status, never claimable again")),
        }
        if !task.capabilities.is_empty() {
            reasons.push(format!(
                "a claimer needs the capabilities {}",
                task.capabilities.join(", ")
            ));
        }
        if task.route == Route::Human || self.options.human_kinds.contains(&task.kind) {
            reasons.push("meant for a person: claim-next never hands it to an agent".into());
        }
        let decisions: Vec<serde_json::Value> = self
            .task_events(task.id, 200)
            .await?
            .into_iter()
            .filter(|e| e.kind == "task.routed" || e.kind == "task.stalled")
            .map(|e| json!({"kind": e.kind, "at": e.at, "data": e.data}))
            .collect();
        Ok(Why {
            task_id: task.id,
            status: task.status,
            claimable: task.is_claimable(now),
            reasons,
            dependencies,
            dependents,
            lease: task.lease,
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            capabilities: task.capabilities,
            decisions,
        })
    }
}
