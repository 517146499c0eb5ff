//! Dependency edges on PostgreSQL, inside the caller's transaction: resolving ids and keys, the
//! statuses a new or unblocked task depends on, cycle checks for edits, and settling dependents
//! when a task completes, fails or is cancelled. Other transactions run alongside, so what a
//! decision reads is locked first: the dependencies whose statuses decide a task's (`FOR SHARE`),
//! the dependents a completion may release (`FOR UPDATE`), and the dependency graph itself while
//! an edit checks it for cycles (a transaction-scoped advisory lock).

use std::collections::HashMap;

use sqlx::PgConnection;

use crate::domain::{Because, BlockedBy, Change, InputError, NewEvent, Status, TaskRef};
use crate::store::{StoreError, StoreResult};

use super::rows::to_json;
use super::tx::Tx;
use crate::store::announce::Announce;

/// The advisory lock key a dependency edit holds while it checks for cycles and writes its
/// edges: two edits that would each close half of a cycle cannot both pass the check.
pub(super) const DEPENDENCY_EDIT_LOCK: i64 = 0x7479_6465_7073; // "tydeps"

/// Turns ids and keys into ids; `batch` holds keys created earlier in the same transaction.
/// Errors name `field[i]`.
pub(super) async fn resolve(
    conn: &mut PgConnection,
    refs: &[TaskRef],
    field: &str,
    batch: &HashMap<String, i64>,
) -> StoreResult<Vec<i64>> {
    let mut ids = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let found: Option<i64> = match r {
            TaskRef::Key(k) if batch.contains_key(k) => batch.get(k).copied(),
            TaskRef::Key(k) => {
                sqlx::query_scalar("SELECT id FROM tasks WHERE key = $1")
                    .bind(k)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            TaskRef::Id(id) => {
                sqlx::query_scalar("SELECT id FROM tasks WHERE id = $1")
                    .bind(*id)
                    .fetch_optional(&mut *conn)
                    .await?
            }
        };
        let id = found.ok_or_else(|| InputError::new(format!("{field}[{i}]"), format!("no task {r}")))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The statuses of the tasks `ids`, in that order, for `lifecycle::waiting_on`. Inside a
/// transaction their rows stay share-locked until it ends: none of them can complete, fail or
/// be cancelled while the caller decides on what it read (a completion waits, and then finds
/// the caller's task as it left it).
pub(super) async fn statuses(conn: &mut PgConnection, ids: &[i64]) -> StoreResult<Vec<(i64, Status)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, status FROM tasks WHERE id = ANY($1) ORDER BY id FOR SHARE")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    let found: HashMap<i64, String> = found.into_iter().collect();
    ids.iter()
        .map(|id| {
            let status = found
                .get(id)
                .ok_or_else(|| StoreError::Corrupt(format!("dependency #{id} does not exist")))?;
            Ok((*id, status.parse().map_err(StoreError::Corrupt)?))
        })
        .collect()
}

/// Replaces the dependency edges of `task_id` (and the list the task row mirrors).
pub(super) async fn set(conn: &mut PgConnection, task_id: i64, deps: &[i64]) -> StoreResult<()> {
    sqlx::query("DELETE FROM task_deps WHERE task_id = $1")
        .bind(task_id)
        .execute(&mut *conn)
        .await?;
    if !deps.is_empty() {
        sqlx::query(
            "INSERT INTO task_deps (task_id, depends_on_id) \
             SELECT $1, dep FROM unnest($2::int8[]) WITH ORDINALITY AS d(dep, n) ORDER BY n",
        )
        .bind(task_id)
        .bind(deps)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE tasks SET depends_on = $1 WHERE id = $2")
        .bind(to_json(&deps))
        .bind(task_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A dependency of `deps` through which `task_id` would come to depend on itself. Inside a
/// transaction, dependency edits are serialized from here until it ends, so the graph checked
/// is the graph written to.
pub(super) async fn cycle_through(
    conn: &mut PgConnection,
    task_id: i64,
    deps: &[i64],
) -> StoreResult<Option<i64>> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DEPENDENCY_EDIT_LOCK)
        .execute(&mut *conn)
        .await?;
    for dep in deps {
        if *dep == task_id {
            return Ok(Some(*dep));
        }
        let reaches: bool = sqlx::query_scalar(
            "WITH RECURSIVE up(id) AS (SELECT $1::bigint UNION \
                 SELECT d.depends_on_id FROM task_deps d JOIN up ON d.task_id = up.id) \
             SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
        )
        .bind(*dep)
        .bind(task_id)
        .fetch_one(&mut *conn)
        .await?;
        if reaches {
            return Ok(Some(*dep));
        }
    }
    Ok(None)
}

/// Dependents of `dead` (failed or cancelled) that are still waiting become blocked.
pub(super) async fn block_dependents(tx: &mut Tx, dead: i64, status: Status, actor: &str) -> StoreResult<()> {
    let reason = format!("dependency #{dead} is {status}");
    let now = tx.now;
    let mut blocked: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasks SET status = 'blocked', status_reason = $2, updated_at = $3 \
         WHERE status IN ('pending', 'available') \
           AND id IN (SELECT task_id FROM task_deps WHERE depends_on_id = $1) \
         RETURNING id",
    )
    .bind(dead)
    .bind(&reason)
    .bind(now.millis())
    .fetch_all(tx.db())
    .await?;
    blocked.sort_unstable();
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

/// What a change does to the dependents of the tasks it ends, and so whose rows it locks first
/// (see [`lock_dependents`]).
#[derive(Clone, Copy)]
pub(super) enum Dependents {
    /// Completed: those waiting may become ready.
    Release,
    /// Failed or cancelled: those waiting or ready become blocked.
    Block,
}

/// Locks, inside the caller's change, the rows of the dependents of `of` that `what` changes.
/// A change that ends reservations calls this before: ending them takes the reserving lock, and
/// everywhere else rows are locked before it (a cancellation holding a dependent's row may be
/// waiting for that lock), so taking a dependent's row after it could deadlock.
pub(super) async fn lock_dependents(tx: &mut Tx, of: &[i64], what: Dependents) -> StoreResult<()> {
    let statuses: &[&str] = match what {
        Dependents::Release => &["pending"],
        Dependents::Block => &["pending", "available"],
    };
    sqlx::query(
        "SELECT id FROM tasks WHERE status = ANY($2) \
           AND id IN (SELECT task_id FROM task_deps WHERE depends_on_id = ANY($1)) \
         ORDER BY id FOR UPDATE",
    )
    .bind(of)
    .bind(statuses)
    .execute(tx.db())
    .await?;
    Ok(())
}

/// Pending dependents of `done` whose dependencies are now all completed become available.
///
/// Two dependencies of one task may complete at once, each transaction still seeing the other
/// as unfinished. So the pending dependents are locked first (in id order), and only then is
/// each judged, by a statement that sees every completion committed while it waited: whichever
/// completion comes second releases the task.
pub(super) async fn release_dependents(tx: &mut Tx, done: i64, actor: &str) -> StoreResult<()> {
    let pending: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE status = 'pending' \
           AND id IN (SELECT task_id FROM task_deps WHERE depends_on_id = $1) \
         ORDER BY id FOR UPDATE",
    )
    .bind(done)
    .fetch_all(tx.db())
    .await?;
    // Most tasks have no dependents waiting: the lookup above settles that.
    if pending.is_empty() {
        return Ok(());
    }
    let now = tx.now;
    let mut ready: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasks SET status = 'available', status_reason = NULL, updated_at = $2 \
         WHERE id = ANY($1) AND status = 'pending' \
           AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.depends_on_id \
                           WHERE d.task_id = tasks.id AND t.status <> 'completed') \
         RETURNING id",
    )
    .bind(&pending)
    .bind(now.millis())
    .fetch_all(tx.db())
    .await?;
    ready.sort_unstable();
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
