//! Tasks as records on PostgreSQL: creating them (one or a batch, all or nothing, with
//! dependencies between them), reading, listing, editing, a run token's scope, and the facts
//! `why`, the overview and the manual queue are made of.
//!
//! Many changes run at once here, so a change locks what its rules are judged on before judging
//! them: a subtask's parent (depth, fan-out, status) is locked for update, the tasks a new or
//! edited task depends on are locked for share (a dependency cannot finish unseen while its new
//! dependent is settled), and edits of dependencies take one advisory lock so two edits cannot
//! close a cycle between them. Rows are locked in id order. A key inserted concurrently by
//! another change yields that task, as an existing key does.

use std::collections::{BTreeMap, HashMap};

use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::query::Query;
use sqlx::Postgres as Pg;

use crate::domain::input::{TaskPatch, TaskSpec};
use crate::domain::lifecycle::waiting_on;
use crate::domain::plan::{find_cycle, subtask_depth, Parent};
use crate::domain::{Change, InputError, NewEvent, Principal, Priority, Status, Task, TaskRef, Timestamp};
use crate::store::{
    DependencyState, EventLog, MinuteCount, Routes, Stats, StoreError, StoreResult, TaskFilter, TaskPage,
    Tasks, WhyFacts,
};

use super::rows::{to_json, TASK_COLUMNS};
use super::tx::Tx;
use super::{deps, fetch_task, find_task, lock_task, query_tasks, reservations, Postgres};
use crate::store::announce::Announce;

/// One minute in ms.
const MINUTE: i64 = 60_000;

/// A parameter of a statement built at run time.
enum Arg {
    Text(String),
    Int(i64),
    Texts(Vec<String>),
    Ints(Vec<i64>),
}

/// Binds `args` to `query`, in order.
fn bind_all<'q>(mut query: Query<'q, Pg, PgArguments>, args: Vec<Arg>) -> Query<'q, Pg, PgArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Texts(v) => query.bind(v),
            Arg::Ints(v) => query.bind(v),
        };
    }
    query
}

/// Parameters gathered while a statement is built; each one added answers its placeholder.
#[derive(Default)]
struct Args(Vec<Arg>);

impl Args {
    /// Adds `arg`; returns its placeholder (`$n`).
    fn add(&mut self, arg: Arg) -> String {
        self.0.push(arg);
        format!("${}", self.0.len())
    }
}

/// Locks the tasks `ids` for share, in id order, until the transaction ends: none of them can
/// change status before it commits.
async fn share_locked(conn: &mut PgConnection, ids: &[i64]) -> StoreResult<()> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if !ids.is_empty() {
        sqlx::query("SELECT id FROM tasks WHERE id = ANY($1) ORDER BY id FOR SHARE")
            .bind(&ids)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The id of the task with `key`, if there is one.
async fn id_by_key(conn: &mut PgConnection, key: &str) -> StoreResult<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT id FROM tasks WHERE key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await?)
}

/// Creates `specs` in the caller's change (see [`Tasks::create_tasks`]).
async fn create_in(
    tx: &mut Tx,
    specs: Vec<TaskSpec>,
    creator: &Principal,
    batch_prefix: &str,
    (max_depth, max_fanout): (i64, i64),
) -> StoreResult<Vec<(Task, bool)>> {
    let field = |i: usize, name: &str| {
        if batch_prefix.is_empty() {
            name.to_string()
        } else {
            format!("{batch_prefix}[{i}].{name}")
        }
    };
    let now = tx.now;
    // Parents are judged on their depth, subtasks and status: locked first, in id order.
    let mut parents: Vec<i64> = specs.iter().filter_map(|s| s.parent_id).collect();
    parents.sort_unstable();
    parents.dedup();
    if !parents.is_empty() {
        sqlx::query("SELECT id FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&parents)
            .execute(tx.db())
            .await?;
    }
    let mut keys: HashMap<String, i64> = HashMap::new();
    let mut slots: Vec<(i64, bool)> = Vec::with_capacity(specs.len());
    // New tasks already complete as inserted, by id.
    let mut inserted: HashMap<i64, Task> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        if let Some(key) = &spec.key {
            if keys.contains_key(key) {
                return Err(InputError::new(
                    field(i, "key"),
                    format!("key {key:?} appears twice in the batch"),
                )
                .into());
            }
            if let Some(id) = id_by_key(tx.db(), key).await? {
                keys.insert(key.clone(), id);
                slots.push((id, false));
                continue;
            }
        }
        let mut depth = 0;
        if let Some(parent) = spec.parent_id {
            let found: Option<(i64, String)> =
                sqlx::query_as("SELECT depth, status FROM tasks WHERE id = $1")
                    .bind(parent)
                    .fetch_optional(tx.db())
                    .await?;
            let Some((parent_depth, status)) = found else {
                return Err(InputError::new(field(i, "parent_id"), format!("no task #{parent}")).into());
            };
            // Counted once the parent is locked: every subtask committed before is seen.
            let children: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE parent_id = $1")
                .bind(parent)
                .fetch_one(tx.db())
                .await?;
            let parent = Parent {
                id: parent,
                depth: parent_depth,
                children,
                status: status.parse().map_err(StoreError::Corrupt)?,
            };
            depth = subtask_depth(parent, max_depth, max_fanout)
                .map_err(|message| InputError::new(field(i, "parent_id"), message))?;
        }
        // A task without dependencies is available at once and complete as inserted; one with
        // dependencies is settled below, once every task of the batch has an id.
        let status = if spec.depends_on.is_empty() {
            Status::Available
        } else {
            Status::Pending
        };
        // A concurrent change may insert the same key meanwhile: this insert then waits for it
        // and, once it committed, leaves its task be.
        let row = sqlx::query(&format!(
            "INSERT INTO tasks (key, project, title, description, priority, kind, capabilities, \
             acceptance_criteria, parent_id, route, status, max_attempts, created_by, created_at, updated_at, depth, paths) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16) \
             ON CONFLICT (key) DO NOTHING RETURNING {TASK_COLUMNS}"
        ))
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
        .bind(status.as_str())
        .bind(spec.max_attempts)
        .bind(&creator.name)
        .bind(now.millis())
        .bind(depth)
        .bind(to_json(&spec.paths))
        .fetch_optional(tx.db())
        .await?;
        let Some(row) = row else {
            let key = spec.key.clone().unwrap_or_default();
            let id = id_by_key(tx.db(), &key).await?.ok_or_else(|| {
                StoreError::conflict(format!(
                    "key {key:?} was taken by a concurrent change that is not visible yet; try again"
                ))
            })?;
            keys.insert(key, id);
            slots.push((id, false));
            continue;
        };
        let task = super::rows::task(&row)?;
        let id = task.id;
        if let Some(key) = &spec.key {
            keys.insert(key.clone(), id);
        }
        if status == Status::Available {
            inserted.insert(id, task);
        }
        slots.push((id, true));
    }

    let mut edges: HashMap<i64, Vec<i64>> = HashMap::new();
    for (i, (spec, (id, new))) in specs.iter().zip(&slots).enumerate() {
        if *new {
            let ids = deps::resolve(tx.db(), &spec.depends_on, &field(i, "depends_on"), &keys).await?;
            edges.insert(*id, ids);
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        // The ids die with the rolled-back change: name the tasks by key or position.
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
    // The statuses the new tasks start from must stay true until the change commits.
    let all: Vec<i64> = edges.values().flatten().copied().collect();
    share_locked(tx.db(), &all).await?;

    let mut out = Vec::with_capacity(slots.len());
    for (id, new) in &slots {
        if !*new {
            out.push((fetch_task(tx.db(), *id).await?, false));
            continue;
        }
        let ids = edges.get(id).map(Vec::as_slice).unwrap_or_default();
        let (status, reason, task) = if ids.is_empty() {
            let task = match inserted.remove(id) {
                Some(task) => task,
                None => fetch_task(tx.db(), *id).await?,
            };
            (Status::Available, None, task)
        } else {
            deps::set(tx.db(), *id, ids).await?;
            let (status, reason) = waiting_on(&deps::statuses(tx.db(), ids).await?);
            let row = sqlx::query(&format!(
                "UPDATE tasks SET status = $1, status_reason = $2 WHERE id = $3 RETURNING {TASK_COLUMNS}"
            ))
            .bind(status.as_str())
            .bind(&reason)
            .bind(*id)
            .fetch_one(tx.db())
            .await?;
            (status, reason, super::rows::task(&row)?)
        };
        if status == Status::Available {
            tx.ready(*id);
        }
        // The event carries the title and priority so live views need no extra fetch.
        tx.event(NewEvent::task(
            *id,
            &creator.name,
            Change::TaskCreated {
                status,
                reason,
                title: task.title.clone(),
                priority: Some(task.priority),
            },
        ));
        out.push((task, true));
    }
    Ok(out)
}

/// Applies `patch` to task `id` in the caller's change.
async fn patch_in(tx: &mut Tx, id: i64, patch: TaskPatch, actor: &Principal) -> StoreResult<Task> {
    if patch.depends_on.is_some() {
        // Taken before the row lock, so edits of dependencies queue here and never hold a task
        // another one waits for.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(deps::DEPENDENCY_EDIT_LOCK)
            .execute(tx.db())
            .await?;
    }
    if let Some(refs) = &patch.depends_on {
        // The new dependencies' rows before the task's own: completing a dependency locks it,
        // then its dependents (this task among them), so taking them the other way round here
        // could deadlock with that completion.
        let ids = deps::resolve(tx.db(), refs, "depends_on", &HashMap::new()).await?;
        deps::statuses(tx.db(), &ids).await?;
    }
    let task = lock_task(tx.db(), id).await?;
    if task.status == Status::InProgress {
        return Err(StoreError::conflict(format!(
            "task #{id} is in progress; release it before editing"
        )));
    }
    let mut changed: Vec<String> = Vec::new();
    let mut args = Args::default();
    let id_param = args.add(Arg::Int(id));
    let mut sets: Vec<String> = Vec::new();
    let mut set = |column: &str, value: Option<Arg>| {
        if let Some(value) = value {
            let param = args.add(value);
            sets.push(format!("{column} = {param}"));
            changed.push(column.to_string());
        }
    };
    set("project", patch.project.clone().map(Arg::Text));
    set("title", patch.title.clone().map(Arg::Text));
    set("description", patch.description.clone().map(Arg::Text));
    set("priority", patch.priority.map(|p| Arg::Int(p.rank())));
    set("kind", patch.kind.clone().map(Arg::Text));
    set(
        "capabilities",
        patch.capabilities.as_ref().map(|v| Arg::Text(to_json(v))),
    );
    set(
        "acceptance_criteria",
        patch.acceptance_criteria.as_ref().map(|v| Arg::Text(to_json(v))),
    );
    set("paths", patch.paths.as_ref().map(|v| Arg::Text(to_json(v))));
    set("route", patch.route.map(|r| Arg::Text(r.as_str().to_string())));
    set("max_attempts", patch.max_attempts.map(Arg::Int));
    let mut woke = false;
    if let Some(refs) = &patch.depends_on {
        if task.status.is_final() {
            return Err(StoreError::conflict(format!(
                "task #{id} is {}; its dependencies can no longer change",
                task.status
            )));
        }
        let ids = deps::resolve(tx.db(), refs, "depends_on", &HashMap::new()).await?;
        if let Some(dep) = deps::cycle_through(tx.db(), id, &ids).await? {
            return Err(InputError::new(
                "depends_on",
                format!("depending on #{dep} would make task #{id} depend on itself"),
            )
            .into());
        }
        share_locked(tx.db(), &ids).await?;
        deps::set(tx.db(), id, &ids).await?;
        if matches!(task.status, Status::Pending | Status::Available) {
            let (status, reason) = waiting_on(&deps::statuses(tx.db(), &ids).await?);
            sqlx::query("UPDATE tasks SET status = $1, status_reason = $2 WHERE id = $3")
                .bind(status.as_str())
                .bind(&reason)
                .bind(id)
                .execute(tx.db())
                .await?;
            woke = status == Status::Available && task.status != Status::Available;
        }
        changed.push("depends_on".into());
    }
    // An edited task is routed afresh.
    let now_param = args.add(Arg::Int(tx.now.millis()));
    sets.push(format!("updated_at = {now_param}"));
    sets.push("routed_to = NULL".into());
    sets.push("routed_reason = NULL".into());
    let sql = format!(
        "UPDATE tasks SET {} WHERE id = {id_param} RETURNING {TASK_COLUMNS}",
        sets.join(", ")
    );
    let row = bind_all(sqlx::query(&sql), args.0).fetch_one(tx.db()).await?;
    let updated = super::rows::task(&row)?;
    woke |= patch.priority.is_some() || patch.capabilities.is_some() || patch.paths.is_some();
    if woke && updated.status == Status::Available {
        tx.ready(id);
    }
    // The columns are named as the API names the fields.
    tx.event(NewEvent::task(
        id,
        &actor.name,
        Change::TaskUpdated { fields: changed },
    ));
    Ok(updated)
}

/// The tasks linked to `id` by `sql` (one parameter; selects id, title, status).
async fn linked(conn: &mut PgConnection, sql: &str, id: i64) -> StoreResult<Vec<DependencyState>> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(sql).bind(id).fetch_all(conn).await?;
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

/// The `WHERE` conditions and parameters of a task listing.
fn list_filter(filter: &TaskFilter) -> (String, Args) {
    let mut sql = String::from("1 = 1");
    let mut args = Args::default();
    if !filter.status.is_empty() {
        let statuses = filter.status.iter().map(|s| s.as_str().to_string()).collect();
        sql.push_str(&format!(" AND status = ANY({})", args.add(Arg::Texts(statuses))));
    }
    if !filter.priority.is_empty() {
        let ranks = filter.priority.iter().map(|p| p.rank()).collect();
        sql.push_str(&format!(" AND priority = ANY({})", args.add(Arg::Ints(ranks))));
    }
    if let Some(project) = &filter.project {
        sql.push_str(&format!(
            " AND project = {}",
            args.add(Arg::Text(project.clone()))
        ));
    }
    if let Some(kind) = &filter.kind {
        sql.push_str(&format!(" AND kind = {}", args.add(Arg::Text(kind.clone()))));
    }
    if let Some(cap) = &filter.capability {
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(tasks.capabilities::jsonb) AS c(value) \
             WHERE c.value = {})",
            args.add(Arg::Text(cap.clone()))
        ));
    }
    if let Some(route) = filter.route {
        sql.push_str(&format!(
            " AND route = {}",
            args.add(Arg::Text(route.as_str().to_string()))
        ));
    }
    if let Some(parent) = filter.parent_id {
        sql.push_str(&format!(" AND parent_id = {}", args.add(Arg::Int(parent))));
    }
    if let Some(text) = &filter.q {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        let pattern = args.add(Arg::Text(pattern));
        let key = args.add(Arg::Text(text.clone()));
        sql.push_str(&format!(
            " AND (title ILIKE {pattern} ESCAPE '\\' OR description ILIKE {pattern} ESCAPE '\\' OR key = {key})"
        ));
    }
    if let Some(before) = filter.before_id {
        sql.push_str(&format!(" AND id < {}", args.add(Arg::Int(before))));
    }
    (sql, args)
}

#[async_trait::async_trait]
impl Tasks for Postgres {
    async fn create_tasks(
        &self,
        specs: Vec<TaskSpec>,
        creator: &Principal,
        batch_prefix: &str,
    ) -> StoreResult<Vec<(Task, bool)>> {
        let limits = (self.options.max_depth, self.options.max_fanout);
        let mut tx = self.begin().await?;
        let created = create_in(&mut tx, specs, creator, batch_prefix, limits).await?;
        let created = self.commit(tx, created).await?;
        let new = created.iter().filter(|(_, new)| *new).count();
        self.statistics.created(new, &self.pool);
        Ok(created)
    }

    async fn task(&self, r: &TaskRef) -> StoreResult<Task> {
        let mut conn = self.conn().await?;
        let found = match r {
            TaskRef::Id(id) => find_task(&mut conn, *id).await?,
            TaskRef::Key(key) => query_tasks(
                &mut conn,
                sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE key = $1")).bind(key),
            )
            .await?
            .pop(),
        };
        found.ok_or_else(|| StoreError::not_found(format!("task {r}")))
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<TaskPage> {
        let (conditions, mut args) = list_filter(filter);
        let limit = filter.limit;
        let limit_param = args.add(Arg::Int(limit + 1));
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE {conditions} ORDER BY id DESC LIMIT {limit_param}"
        );
        let mut conn = self.conn().await?;
        let mut items = query_tasks(&mut conn, bind_all(sqlx::query(&sql), args.0)).await?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(usize::try_from(limit).unwrap_or(0));
            items.last().map(|t| t.id.to_string())
        } else {
            None
        };
        Ok(TaskPage { items, next_cursor })
    }

    async fn patch_task(&self, id: i64, patch: TaskPatch, actor: &Principal) -> StoreResult<Task> {
        let mut tx = self.begin().await?;
        let updated = patch_in(&mut tx, id, patch, actor).await?;
        self.commit(tx, updated).await
    }

    async fn within_scope(&self, scope: i64, task_id: i64) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "WITH RECURSIVE up(id) AS (SELECT $1::bigint UNION SELECT t.parent_id FROM tasks t JOIN up ON t.id = up.id \
                                       WHERE t.parent_id IS NOT NULL) \
             SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
        )
        .bind(task_id)
        .bind(scope)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn why_facts(&self, task: &Task) -> StoreResult<WhyFacts> {
        let id = task.id;
        let (dependencies, dependents) = {
            let mut conn = self.conn().await?;
            let dependencies = linked(
                &mut conn,
                "SELECT t.id, t.title, t.status FROM task_deps d JOIN tasks t ON t.id = d.depends_on_id \
                 WHERE d.task_id = $1 ORDER BY t.id",
                id,
            )
            .await?;
            let dependents = linked(
                &mut conn,
                "SELECT t.id, t.title, t.status FROM task_deps d JOIN tasks t ON t.id = d.task_id \
                 WHERE d.depends_on_id = $1 ORDER BY t.id LIMIT 500",
                id,
            )
            .await?;
            (dependencies, dependents)
        };
        let routing = self.routing_of(id).await?;
        let events = self.task_events(id, 200).await?;
        let clash = if task.paths.is_empty() {
            None
        } else {
            let mut conn = self.conn().await?;
            // Whether a reservation is still alive is the database clock's call.
            let now: i64 = sqlx::query_scalar("SELECT taskyard_now_ms()")
                .fetch_one(&mut *conn)
                .await?;
            let live = reservations::live(&mut conn, Timestamp(now)).await?;
            reservations::clash_for(&mut conn, id, &task.paths, true, &live).await?
        };
        Ok(WhyFacts {
            dependencies,
            dependents,
            routing,
            events,
            clash,
        })
    }

    async fn stats(&self) -> StoreResult<Stats> {
        let mut conn = self.conn().await?;
        // Events are stamped by the database's clock: the last hour is counted by it too.
        let now: i64 = sqlx::query_scalar("SELECT taskyard_now_ms()")
            .fetch_one(&mut *conn)
            .await?;
        let mut by_status: BTreeMap<String, i64> =
            Status::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
        let counts: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status")
            .fetch_all(&mut *conn)
            .await?;
        by_status.extend(counts);
        let mut open_by_priority: BTreeMap<String, i64> = Priority::ALL
            .iter()
            .map(|p| (p.as_str().to_string(), 0))
            .collect();
        let open: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT priority, COUNT(*) FROM tasks \
             WHERE status IN ('pending', 'available', 'in_progress', 'blocked') GROUP BY priority",
        )
        .fetch_all(&mut *conn)
        .await?;
        for (p, n) in open {
            if let Some(p) = Priority::from_rank(p) {
                open_by_priority.insert(p.as_str().to_string(), n);
            }
        }
        let (agents, agents_online): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'online') FROM agents WHERE kind NOT IN ('spawned')",
        )
        .fetch_one(&mut *conn)
        .await?;
        let live_runs: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status IN ('starting', 'running')")
                .fetch_one(&mut *conn)
                .await?;
        let first = (now / MINUTE - 59) * MINUTE;
        let mut per_minute: Vec<MinuteCount> = (0..60)
            .map(|i| MinuteCount {
                minute: Timestamp(first + i * MINUTE),
                claimed: 0,
                completed: 0,
            })
            .collect();
        let counts: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT created_at / 60000, kind, COUNT(*) FROM events \
             WHERE created_at >= $1 AND kind IN ('task.claimed', 'task.completed') GROUP BY 1, 2",
        )
        .bind(first)
        .fetch_all(&mut *conn)
        .await?;
        for (minute, kind, n) in counts {
            let Some(slot) = usize::try_from(minute - first / MINUTE)
                .ok()
                .and_then(|i| per_minute.get_mut(i))
            else {
                continue;
            };
            if kind == "task.claimed" {
                slot.claimed = n;
            } else {
                slot.completed = n;
            }
        }
        Ok(Stats {
            by_status,
            open_by_priority,
            agents,
            agents_online,
            live_runs,
            per_minute,
        })
    }

    async fn people_queue(&self, limit: i64) -> StoreResult<Vec<(Task, Option<(i64, String)>)>> {
        let mut conn = self.conn().await?;
        let tasks = query_tasks(
            &mut conn,
            sqlx::query(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'blocked' OR (status = 'available' AND \
                 (routed_to = 'human' OR route = 'human' OR (route = 'auto' AND kind = ANY($1)))) \
                 ORDER BY priority, id LIMIT $2"
            ))
            .bind(&self.options.human_kinds)
            .bind(limit),
        )
        .await?;
        let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
        let offers: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT task_id, id, human FROM notifications WHERE action IS NULL \
             AND reason IN ('routed', 'spawn_fallback', 'blocked') \
             AND task_id = ANY($1) ORDER BY id",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        // Newest offer per task wins.
        let offers: HashMap<i64, (i64, String)> = offers
            .into_iter()
            .map(|(task, id, human)| (task, (id, human)))
            .collect();
        Ok(tasks
            .into_iter()
            .map(|t| {
                let offer = offers.get(&t.id).cloned();
                (t, offer)
            })
            .collect())
    }

    async fn tasks_for_people(&self, since: Timestamp, limit: i64) -> StoreResult<Vec<Task>> {
        let mut conn = self.conn().await?;
        query_tasks(
            &mut conn,
            sqlx::query(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE (status = 'available' AND routed_to = 'human') \
                 OR status = 'blocked' OR (status = 'failed' AND updated_at >= $1) \
                 ORDER BY priority, id LIMIT $2"
            ))
            .bind(since.millis())
            .bind(limit),
        )
        .await
    }
}
