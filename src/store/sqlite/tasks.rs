//! Tasks as records on SQLite: creating them (one or a batch, all or nothing, with dependencies
//! between them), reading, listing, editing, a run token's scope, and the facts `why`, the
//! overview and the manual queue are made of.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};

use crate::domain::input::{TaskPatch, TaskSpec};
use crate::domain::lifecycle::waiting_on;
use crate::domain::plan::{find_cycle, subtask_depth, Parent};
use crate::domain::{Change, InputError, NewEvent, Principal, Priority, Status, Task, TaskRef, Timestamp};
use crate::store::{
    DependencyState, EventLog, MinuteCount, Routes, Stats, StoreError, StoreResult, TaskFilter, TaskPage,
    Tasks, WhyFacts,
};

use super::engine::Tx;
use super::reservations;
use super::rows::{to_json, TASK_COLUMNS};
use super::{deps, fetch_task, query_tasks, Sqlite};
use crate::store::announce::Announce;

const MINUTE: i64 = 60_000;

/// Creates `specs` in the caller's change (see [`Tasks::create_tasks`]).
fn create_in(
    tx: &mut Tx<'_>,
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
            let existing: Option<i64> = tx
                .prepare_cached("SELECT id FROM tasks WHERE key = ?1")?
                .query_row([key], |row| row.get(0))
                .optional()?;
            if let Some(id) = existing {
                keys.insert(key.clone(), id);
                slots.push((id, false));
                continue;
            }
        }
        let mut depth = 0;
        if let Some(parent) = spec.parent_id {
            let found = tx
                .prepare_cached(
                    "SELECT depth, (SELECT COUNT(*) FROM tasks c WHERE c.parent_id = p.id), status FROM tasks p WHERE id = ?1",
                )?
                .query_row([parent], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?))
                })
                .optional()?;
            let Some((parent_depth, children, status)) = found else {
                return Err(InputError::new(field(i, "parent_id"), format!("no task #{parent}")).into());
            };
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
        let task = tx
            .prepare_cached(&format!(
                "INSERT INTO tasks (key, project, title, description, priority, kind, capabilities, \
                 acceptance_criteria, parent_id, route, status, max_attempts, created_by, created_at, updated_at, depth, paths) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16) RETURNING {TASK_COLUMNS}"
            ))?
            .query_row(
                params![
                    spec.key,
                    spec.project,
                    spec.title,
                    spec.description,
                    spec.priority.rank(),
                    spec.kind,
                    to_json(&spec.capabilities),
                    to_json(&spec.acceptance_criteria),
                    spec.parent_id,
                    spec.route.as_str(),
                    status.as_str(),
                    spec.max_attempts,
                    creator.name,
                    now.millis(),
                    depth,
                    to_json(&spec.paths)
                ],
                super::rows::task,
            )??;
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
            edges.insert(
                *id,
                deps::resolve(tx, &spec.depends_on, &field(i, "depends_on"), &keys)?,
            );
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

    let mut out = Vec::with_capacity(slots.len());
    for (id, new) in &slots {
        if !*new {
            out.push((fetch_task(tx, *id)?, false));
            continue;
        }
        let ids = &edges[id];
        let (status, reason) = if ids.is_empty() {
            (Status::Available, None)
        } else {
            deps::set(tx, *id, ids)?;
            let (status, reason) = waiting_on(&deps::statuses(tx, ids)?);
            tx.prepare_cached("UPDATE tasks SET status = ?1, status_reason = ?2 WHERE id = ?3")?
                .execute(params![status.as_str(), reason, id])?;
            (status, reason)
        };
        let task = match inserted.remove(id) {
            Some(task) => task,
            None => fetch_task(tx, *id)?,
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
fn patch_in(tx: &mut Tx<'_>, id: i64, patch: TaskPatch, actor: &Principal) -> StoreResult<Task> {
    let task = fetch_task(tx, id)?;
    if task.status == Status::InProgress {
        return Err(StoreError::conflict(format!(
            "task #{id} is in progress; release it before editing"
        )));
    }
    let mut changed: Vec<String> = Vec::new();
    let mut set = |column: &str, value: Option<&dyn ToSql>| -> StoreResult<()> {
        if let Some(value) = value {
            tx.execute(
                &format!("UPDATE tasks SET {column} = ?1 WHERE id = ?2"),
                params![value, id],
            )?;
            changed.push(column.to_string());
        }
        Ok(())
    };
    set("project", patch.project.as_ref().map(|v| v as &dyn ToSql))?;
    set("title", patch.title.as_ref().map(|v| v as &dyn ToSql))?;
    set("description", patch.description.as_ref().map(|v| v as &dyn ToSql))?;
    let rank = patch.priority.map(Priority::rank);
    set("priority", rank.as_ref().map(|v| v as &dyn ToSql))?;
    set("kind", patch.kind.as_ref().map(|v| v as &dyn ToSql))?;
    let caps = patch.capabilities.as_ref().map(to_json);
    set("capabilities", caps.as_ref().map(|v| v as &dyn ToSql))?;
    let criteria = patch.acceptance_criteria.as_ref().map(to_json);
    set("acceptance_criteria", criteria.as_ref().map(|v| v as &dyn ToSql))?;
    let paths = patch.paths.as_ref().map(to_json);
    set("paths", paths.as_ref().map(|v| v as &dyn ToSql))?;
    let route = patch.route.map(|r| r.as_str());
    set("route", route.as_ref().map(|v| v as &dyn ToSql))?;
    set(
        "max_attempts",
        patch.max_attempts.as_ref().map(|v| v as &dyn ToSql),
    )?;
    let mut woke = false;
    if let Some(refs) = &patch.depends_on {
        if task.status.is_final() {
            return Err(StoreError::conflict(format!(
                "task #{id} is {}; its dependencies can no longer change",
                task.status
            )));
        }
        let ids = deps::resolve(tx, refs, "depends_on", &HashMap::new())?;
        if let Some(dep) = deps::cycle_through(tx, id, &ids)? {
            return Err(InputError::new(
                "depends_on",
                format!("depending on #{dep} would make task #{id} depend on itself"),
            )
            .into());
        }
        deps::set(tx, id, &ids)?;
        if matches!(task.status, Status::Pending | Status::Available) {
            let (status, reason) = waiting_on(&deps::statuses(tx, &ids)?);
            tx.execute(
                "UPDATE tasks SET status = ?1, status_reason = ?2 WHERE id = ?3",
                params![status.as_str(), reason, id],
            )?;
            woke = status == Status::Available && task.status != Status::Available;
        }
        changed.push("depends_on".into());
    }
    // An edited task is routed afresh.
    tx.execute(
        "UPDATE tasks SET updated_at = ?1, routed_to = NULL, routed_reason = NULL WHERE id = ?2",
        params![tx.now.millis(), id],
    )?;
    let updated = fetch_task(tx, id)?;
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
fn linked(conn: &Connection, sql: &str, id: i64) -> StoreResult<Vec<DependencyState>> {
    let rows = conn
        .prepare_cached(sql)?
        .query_map([id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
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
fn list_filter(filter: &TaskFilter) -> (String, Vec<Box<dyn ToSql + Send>>) {
    let mut sql = String::from("1 = 1");
    let mut values: Vec<Box<dyn ToSql + Send>> = Vec::new();
    let mut push = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Send>| {
        values.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", values.len())));
    };
    if !filter.status.is_empty() {
        sql.push_str(" AND status IN (");
        for (i, s) in filter.status.iter().enumerate() {
            push(&mut sql, if i == 0 { "?" } else { ", ?" }, Box::new(s.as_str()));
        }
        sql.push(')');
    }
    if !filter.priority.is_empty() {
        sql.push_str(" AND priority IN (");
        for (i, p) in filter.priority.iter().enumerate() {
            push(&mut sql, if i == 0 { "?" } else { ", ?" }, Box::new(p.rank()));
        }
        sql.push(')');
    }
    if let Some(project) = &filter.project {
        push(&mut sql, " AND project = ?", Box::new(project.clone()));
    }
    if let Some(kind) = &filter.kind {
        push(&mut sql, " AND kind = ?", Box::new(kind.clone()));
    }
    if let Some(cap) = &filter.capability {
        push(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM json_each(tasks.capabilities) c WHERE c.value = ?)",
            Box::new(cap.clone()),
        );
    }
    if let Some(route) = filter.route {
        push(&mut sql, " AND route = ?", Box::new(route.as_str()));
    }
    if let Some(parent) = filter.parent_id {
        push(&mut sql, " AND parent_id = ?", Box::new(parent));
    }
    if let Some(text) = &filter.q {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        push(
            &mut sql,
            " AND (title LIKE ? ESCAPE '\\'",
            Box::new(pattern.clone()),
        );
        push(&mut sql, " OR description LIKE ? ESCAPE '\\'", Box::new(pattern));
        push(&mut sql, " OR key = ?)", Box::new(text.clone()));
    }
    if let Some(before) = filter.before_id {
        push(&mut sql, " AND id < ?", Box::new(before));
    }
    (sql, values)
}

#[async_trait::async_trait]
impl Tasks for Sqlite {
    async fn create_tasks(
        &self,
        specs: Vec<TaskSpec>,
        creator: &Principal,
        batch_prefix: &str,
    ) -> StoreResult<Vec<(Task, bool)>> {
        let (creator, prefix) = (creator.clone(), batch_prefix.to_string());
        let limits = (self.options.max_depth, self.options.max_fanout);
        self.write(move |tx| create_in(tx, specs, &creator, &prefix, limits))
            .await
    }

    async fn task(&self, r: &TaskRef) -> StoreResult<Task> {
        let r = r.clone();
        self.read(move |conn| {
            let found = match &r {
                TaskRef::Id(id) => super::find_task(conn, *id)?,
                TaskRef::Key(key) => query_tasks(
                    conn,
                    &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE key = ?1"),
                    [key],
                )?
                .pop(),
            };
            found.ok_or_else(|| StoreError::not_found(format!("task {r}")))
        })
        .await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<TaskPage> {
        let (conditions, mut values) = list_filter(filter);
        let limit = filter.limit;
        values.push(Box::new(limit + 1));
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE {conditions} ORDER BY id DESC LIMIT ?{}",
            values.len()
        );
        let mut items = self
            .read(move |conn| query_tasks(conn, &sql, params_from_iter(values.iter().map(|v| &**v))))
            .await?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|t| t.id.to_string())
        } else {
            None
        };
        Ok(TaskPage { items, next_cursor })
    }

    async fn patch_task(&self, id: i64, patch: TaskPatch, actor: &Principal) -> StoreResult<Task> {
        let actor = actor.clone();
        self.write(move |tx| patch_in(tx, id, patch, &actor)).await
    }

    async fn within_scope(&self, scope: i64, task_id: i64) -> StoreResult<bool> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT t.parent_id FROM tasks t JOIN up ON t.id = up.id \
                                               WHERE t.parent_id IS NOT NULL) \
                     SELECT 1 FROM up WHERE id = ?2",
                )?
                .exists([task_id, scope])?)
        })
        .await
    }

    async fn why_facts(&self, task: &Task) -> StoreResult<WhyFacts> {
        let id = task.id;
        let (dependencies, dependents) = self
            .read(move |conn| {
                let dependencies = linked(
                    conn,
                    "SELECT t.id, t.title, t.status FROM task_deps d JOIN tasks t ON t.id = d.depends_on_id \
                     WHERE d.task_id = ?1 ORDER BY t.id",
                    id,
                )?;
                let dependents = linked(
                    conn,
                    "SELECT t.id, t.title, t.status FROM task_deps d JOIN tasks t ON t.id = d.task_id \
                     WHERE d.depends_on_id = ?1 ORDER BY t.id LIMIT 500",
                    id,
                )?;
                Ok((dependencies, dependents))
            })
            .await?;
        Ok(WhyFacts {
            dependencies,
            dependents,
            routing: self.routing_of(id).await?,
            events: self.task_events(id, 200).await?,
            clash: match task.paths.is_empty() {
                true => None,
                false => {
                    let paths = task.paths.clone();
                    self.read(move |conn| {
                        let live = reservations::live(conn, Timestamp::now())?;
                        reservations::clash_for(conn, id, &paths, true, &live)
                    })
                    .await?
                }
            },
        })
    }

    async fn stats(&self) -> StoreResult<Stats> {
        let now = Timestamp::now().millis();
        self.read(move |conn| {
            let mut by_status: BTreeMap<String, i64> =
                Status::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
            let counts = conn
                .prepare_cached("SELECT status, COUNT(*) FROM tasks GROUP BY status")?
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            by_status.extend(counts);
            let mut open_by_priority: BTreeMap<String, i64> =
                Priority::ALL.iter().map(|p| (p.as_str().to_string(), 0)).collect();
            let open = conn
                .prepare_cached(
                    "SELECT priority, COUNT(*) FROM tasks \
                     WHERE status IN ('pending', 'available', 'in_progress', 'blocked') GROUP BY priority",
                )?
                .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            for (p, n) in open {
                if let Some(p) = Priority::from_rank(p) {
                    open_by_priority.insert(p.as_str().to_string(), n);
                }
            }
            let (agents, agents_online): (i64, i64) = conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(status = 'online'), 0) FROM agents WHERE kind NOT IN ('spawned')",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let live_runs: i64 = conn.query_row(
                "SELECT COUNT(*) FROM runs WHERE status IN ('starting', 'running')",
                [],
                |row| row.get(0),
            )?;
            let first = (now / MINUTE - 59) * MINUTE;
            let mut per_minute: Vec<MinuteCount> = (0..60)
                .map(|i| MinuteCount {
                    minute: Timestamp(first + i * MINUTE),
                    claimed: 0,
                    completed: 0,
                })
                .collect();
            let counts = conn
                .prepare_cached(
                    "SELECT created_at / 60000, kind, COUNT(*) FROM events \
                     WHERE created_at >= ?1 AND kind IN ('task.claimed', 'task.completed') GROUP BY 1, 2",
                )?
                .query_map([first], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            for (minute, kind, n) in counts {
                let Some(slot) = per_minute.get_mut((minute - first / MINUTE) as usize) else {
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
        })
        .await
    }

    async fn people_queue(&self, limit: i64) -> StoreResult<Vec<(Task, Option<(i64, String)>)>> {
        let kinds = to_json(&self.options.human_kinds);
        self.read(move |conn| {
            let tasks = query_tasks(
                conn,
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'blocked' OR (status = 'available' AND \
                     (routed_to = 'human' OR route = 'human' OR (route = 'auto' AND kind IN (SELECT value FROM json_each(?1))))) \
                     ORDER BY priority, id LIMIT ?2"
                ),
                params![kinds, limit],
            )?;
            let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
            // Newest offer per task wins.
            let offers: HashMap<i64, (i64, String)> = conn
                .prepare_cached(
                    "SELECT task_id, id, human FROM notifications WHERE action IS NULL \
                     AND reason IN ('routed', 'spawn_fallback', 'blocked') \
                     AND task_id IN (SELECT value FROM json_each(?1)) ORDER BY id",
                )?
                .query_map([to_json(&ids)], |row| {
                    Ok((row.get::<_, i64>(0)?, (row.get(1)?, row.get(2)?)))
                })?
                .collect::<Result<_, _>>()?;
            Ok(tasks
                .into_iter()
                .map(|t| {
                    let offer = offers.get(&t.id).cloned();
                    (t, offer)
                })
                .collect())
        })
        .await
    }

    async fn tasks_for_people(&self, since: Timestamp, limit: i64) -> StoreResult<Vec<Task>> {
        self.read(move |conn| {
            query_tasks(
                conn,
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE (status = 'available' AND routed_to = 'human') \
                     OR status = 'blocked' OR (status = 'failed' AND updated_at >= ?1) \
                     ORDER BY priority, id LIMIT ?2"
                ),
                params![since.millis(), limit],
            )
        })
        .await
    }
}
