//! Dependency edges: resolving ids and keys, cycle checks, and settling dependents when a
//! task completes, fails or is cancelled (inside the caller's transaction).

use std::collections::HashMap;

use serde_json::json;
use sqlx::SqliteConnection;

use crate::domain::event::NewEvent;
use crate::domain::{InputError, Status, TaskRef, Timestamp};

use super::rows::to_json;
use super::StoreResult;

/// Turns ids and keys into ids; `batch` holds keys created earlier in the same transaction.
pub(super) async fn resolve(
    tx: &mut SqliteConnection,
    refs: &[TaskRef],
    field: &str,
    batch: &HashMap<String, i64>,
) -> StoreResult<Vec<i64>> {
    let mut ids = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let found: Option<i64> = match r {
            TaskRef::Key(k) if batch.contains_key(k) => batch.get(k).copied(),
            TaskRef::Key(k) => {
                sqlx::query_scalar("SELECT id FROM tasks WHERE key = ?")
                    .bind(k)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            TaskRef::Id(id) => {
                sqlx::query_scalar("SELECT id FROM tasks WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut *tx)
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

/// The status a task with these dependencies starts in, and why.
pub(super) async fn initial_status(
    tx: &mut SqliteConnection,
    deps: &[i64],
) -> StoreResult<(Status, Option<String>)> {
    let mut all_done = true;
    for dep in deps {
        let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?")
            .bind(dep)
            .fetch_one(&mut *tx)
            .await?;
        match status.as_str() {
            "completed" => {}
            "failed" | "cancelled" => {
                return Ok((Status::Blocked, Some(format!("dependency #{dep} is {status}"))))
            }
            _ => all_done = false,
        }
    }
    Ok(if all_done {
        (Status::Available, None)
    } else {
        (Status::Pending, None)
    })
}

/// Replaces the dependency edges of `task_id`.
pub(super) async fn set(tx: &mut SqliteConnection, task_id: i64, deps: &[i64]) -> StoreResult<()> {
    sqlx::query("DELETE FROM task_deps WHERE task_id = ?")
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
    for dep in deps {
        sqlx::query("INSERT INTO task_deps (task_id, depends_on_id) VALUES (?, ?)")
            .bind(task_id)
            .bind(dep)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE tasks SET depends_on = ? WHERE id = ?")
        .bind(to_json(&deps))
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Returns a dependency of `deps` through which `task_id` would come to depend on itself.
pub(super) async fn cycle_through(
    tx: &mut SqliteConnection,
    task_id: i64,
    deps: &[i64],
) -> StoreResult<Option<i64>> {
    for dep in deps {
        if *dep == task_id {
            return Ok(Some(*dep));
        }
        let reaches: Option<i64> = sqlx::query_scalar(
            "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT d.depends_on_id FROM task_deps d JOIN up ON d.task_id = up.id) \
             SELECT id FROM up WHERE id = ?2",
        )
        .bind(dep)
        .bind(task_id)
        .fetch_optional(&mut *tx)
        .await?;
        if reaches.is_some() {
            return Ok(Some(*dep));
        }
    }
    Ok(None)
}

/// Dependents of `dead` (failed or cancelled) that are still waiting become blocked.
pub(super) async fn block_dependents(
    tx: &mut SqliteConnection,
    dead: i64,
    status: Status,
    now: Timestamp,
    actor: &str,
) -> StoreResult<Vec<NewEvent>> {
    let reason = format!("dependency #{dead} is {status}");
    let blocked: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasks SET status = 'blocked', status_reason = ?2, updated_at = ?3 \
         WHERE status IN ('pending', 'available') \
           AND id IN (SELECT task_id FROM task_deps WHERE depends_on_id = ?1) \
         RETURNING id",
    )
    .bind(dead)
    .bind(&reason)
    .bind(now.millis())
    .fetch_all(&mut *tx)
    .await?;
    Ok(blocked
        .into_iter()
        .map(|id| {
            NewEvent::task(
                "task.blocked",
                id,
                actor,
                json!({"reason": reason, "dependency": dead}),
            )
        })
        .collect())
}

/// Finds a cycle among new edges (task → its dependencies), returning it as a path.
/// Only the tasks in `edges` can be on a cycle: older tasks never depend on new ones.
pub(super) fn find_cycle(edges: &HashMap<i64, Vec<i64>>) -> Option<Vec<i64>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: i64,
        edges: &HashMap<i64, Vec<i64>>,
        marks: &mut HashMap<i64, Mark>,
        path: &mut Vec<i64>,
    ) -> Option<Vec<i64>> {
        match marks.get(&node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node, Mark::Open);
        path.push(node);
        for next in edges.get(&node).into_iter().flatten() {
            if let Some(cycle) = visit(*next, edges, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    let mut nodes: Vec<i64> = edges.keys().copied().collect();
    nodes.sort_unstable();
    for node in nodes {
        if let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_and_only_cycles() {
        let chain = HashMap::from([(1, vec![2]), (2, vec![3]), (3, vec![])]);
        assert_eq!(find_cycle(&chain), None);
        let diamond = HashMap::from([(1, vec![2, 3]), (2, vec![4]), (3, vec![4]), (4, vec![])]);
        assert_eq!(find_cycle(&diamond), None);
        let looped = HashMap::from([(1, vec![2]), (2, vec![3]), (3, vec![1])]);
        assert_eq!(find_cycle(&looped), Some(vec![1, 2, 3, 1]));
        let selfish = HashMap::from([(7, vec![7])]);
        assert_eq!(find_cycle(&selfish), Some(vec![7, 7]));
    }
}
