//! Dependency edges on SQLite, inside the writer's transaction: resolving ids and keys, the
//! statuses a new or unblocked task depends on, cycle checks for edits, and settling dependents
//! when a task completes, fails or is cancelled.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::{Because, BlockedBy, Change, InputError, NewEvent, Status, TaskRef};
use crate::store::{StoreError, StoreResult};

use super::engine::Tx;
use super::rows::to_json;
use crate::store::announce::Announce;

/// Turns ids and keys into ids; `batch` holds keys created earlier in the same transaction.
/// Errors name `field[i]`.
pub(super) fn resolve(
    conn: &Connection,
    refs: &[TaskRef],
    field: &str,
    batch: &HashMap<String, i64>,
) -> StoreResult<Vec<i64>> {
    let mut ids = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let found: Option<i64> = match r {
            TaskRef::Key(k) if batch.contains_key(k) => batch.get(k).copied(),
            TaskRef::Key(k) => conn
                .prepare_cached("SELECT id FROM tasks WHERE key = ?1")?
                .query_row([k], |row| row.get(0))
                .optional()?,
            TaskRef::Id(id) => conn
                .prepare_cached("SELECT id FROM tasks WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?,
        };
        let id = found.ok_or_else(|| InputError::new(format!("{field}[{i}]"), format!("no task {r}")))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The statuses of the tasks `ids`, for `lifecycle::waiting_on`.
pub(super) fn statuses(conn: &Connection, ids: &[i64]) -> StoreResult<Vec<(i64, Status)>> {
    let mut select = conn.prepare_cached("SELECT status FROM tasks WHERE id = ?1")?;
    ids.iter()
        .map(|id| {
            let status: String = select.query_row([id], |row| row.get(0))?;
            Ok((*id, status.parse().map_err(StoreError::Corrupt)?))
        })
        .collect()
}

/// Replaces the dependency edges of `task_id` (and the list the task row mirrors).
pub(super) fn set(conn: &Connection, task_id: i64, deps: &[i64]) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM task_deps WHERE task_id = ?1")?
        .execute([task_id])?;
    let mut insert = conn.prepare_cached("INSERT INTO task_deps (task_id, depends_on_id) VALUES (?1, ?2)")?;
    for dep in deps {
        insert.execute([task_id, *dep])?;
    }
    conn.prepare_cached("UPDATE tasks SET depends_on = ?1 WHERE id = ?2")?
        .execute(params![to_json(&deps), task_id])?;
    Ok(())
}

/// A dependency of `deps` through which `task_id` would come to depend on itself.
pub(super) fn cycle_through(conn: &Connection, task_id: i64, deps: &[i64]) -> StoreResult<Option<i64>> {
    let mut reaches = conn.prepare_cached(
        "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT d.depends_on_id FROM task_deps d JOIN up ON d.task_id = up.id) \
         SELECT 1 FROM up WHERE id = ?2",
    )?;
    for dep in deps {
        if *dep == task_id || reaches.exists([*dep, task_id])? {
            return Ok(Some(*dep));
        }
    }
    Ok(None)
}

/// Dependents of `dead` (failed or cancelled) that are still waiting become blocked.
pub(super) fn block_dependents(tx: &mut Tx<'_>, dead: i64, status: Status, actor: &str) -> StoreResult<()> {
    let reason = format!("dependency #{dead} is {status}");
    let blocked = tx
        .prepare_cached(
            "UPDATE tasks SET status = 'blocked', status_reason = ?2, updated_at = ?3 \
             WHERE status IN ('pending', 'available') \
               AND id IN (SELECT task_id FROM task_deps WHERE depends_on_id = ?1) \
             RETURNING id",
        )?
        .query_map(params![dead, reason, tx.now.millis()], |row| row.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    tx.events(blocked.into_iter().map(|id| {
        NewEvent::task(
            id,
            actor,
            Change::TaskBlocked {
                reason: reason.clone(),
                by: BlockedBy::Dependency {
                    dependency: Because::Task(dead),
                },
            },
        )
    }));
    Ok(())
}

/// Pending dependents of `done` whose dependencies are now all completed become available.
pub(super) fn release_dependents(tx: &mut Tx<'_>, done: i64, actor: &str) -> StoreResult<()> {
    // Most tasks have no dependents: one index probe settles that.
    let any = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM task_deps WHERE depends_on_id = ?1)")?
        .query_row([done], |row| row.get::<_, bool>(0))?;
    if !any {
        return Ok(());
    }
    let ready = tx
        .prepare_cached(
            "UPDATE tasks SET status = 'available', status_reason = NULL, updated_at = ?2 \
             WHERE status = 'pending' AND id IN (SELECT task_id FROM task_deps WHERE depends_on_id = ?1) \
               AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.depends_on_id \
                               WHERE d.task_id = tasks.id AND t.status <> 'completed') \
             RETURNING id",
        )?
        .query_map(params![done, tx.now.millis()], |row| row.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for id in &ready {
        tx.ready(*id);
    }
    tx.events(ready.into_iter().map(|id| {
        NewEvent::task(
            id,
            actor,
            Change::TaskReady {
                dependency: Because::Task(done),
                reason: None,
            },
        )
    }));
    Ok(())
}
