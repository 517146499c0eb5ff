//! Counts for the dashboard's overview: tasks by status and priority, agents and runs, and
//! claims and completions per minute over the last hour.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{Priority, Task, Timestamp};

use super::rows::{to_json, TaskRow, TASK_COLUMNS};
use super::{Store, StoreResult};

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

const MINUTE: i64 = 60_000;

impl Store {
    /// The overview's numbers as of now.
    pub async fn stats(&self) -> StoreResult<Stats> {
        let mut by_status: BTreeMap<String, i64> = crate::domain::Status::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status")
            .fetch_all(&self.reader)
            .await?;
        by_status.extend(rows);
        let mut open_by_priority: BTreeMap<String, i64> = Priority::ALL
            .iter()
            .map(|p| (p.as_str().to_string(), 0))
            .collect();
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT priority, COUNT(*) FROM tasks \
             WHERE status IN ('pending', 'available', 'in_progress', 'blocked') GROUP BY priority",
        )
        .fetch_all(&self.reader)
        .await?;
        for (p, n) in rows {
            if let Some(p) = Priority::from_rank(p) {
                open_by_priority.insert(p.as_str().to_string(), n);
            }
        }
        let (agents, agents_online): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(status = 'online'), 0) FROM agents WHERE kind NOT IN ('spawned')",
        )
        .fetch_one(&self.reader)
        .await?;
        let live_runs: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status IN ('starting', 'running')")
                .fetch_one(&self.reader)
                .await?;
        let now = Timestamp::now().millis();
        let first = (now / MINUTE - 59) * MINUTE;
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT created_at / 60000, kind, COUNT(*) FROM events \
             WHERE created_at >= ? AND kind IN ('task.claimed', 'task.completed') GROUP BY 1, 2",
        )
        .bind(first)
        .fetch_all(&self.reader)
        .await?;
        let mut per_minute: Vec<MinuteCount> = (0..60)
            .map(|i| MinuteCount {
                minute: Timestamp(first + i * MINUTE),
                claimed: 0,
                completed: 0,
            })
            .collect();
        for (minute, kind, n) in rows {
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
    }

    /// Work waiting on people, most urgent first: available tasks routed to people or meant for
    /// them, and blocked tasks; each with the person it is offered to and that offer's id.
    pub async fn people_queue(&self, limit: i64) -> StoreResult<Vec<(Task, Option<(i64, String)>)>> {
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'blocked' OR (status = 'available' AND \
             (routed_to = 'human' OR route = 'human' OR (route = 'auto' AND kind IN (SELECT value FROM json_each(?1))))) \
             ORDER BY priority, id LIMIT ?2"
        ))
        .bind(to_json(&self.options.human_kinds))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let tasks = rows
            .into_iter()
            .map(Task::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
        let offers: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT task_id, id, human FROM notifications WHERE action IS NULL \
             AND reason IN ('routed', 'spawn_fallback', 'blocked') \
             AND task_id IN (SELECT value FROM json_each(?)) ORDER BY id",
        )
        .bind(to_json(&ids))
        .fetch_all(&self.reader)
        .await?;
        // Newest offer per task wins.
        let offers: std::collections::HashMap<i64, (i64, String)> = offers
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

    /// The newest email offer of task `task_id` nobody has acted on: its id and person.
    pub async fn open_offer(&self, task_id: i64) -> StoreResult<Option<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, human FROM notifications WHERE task_id = ? AND action IS NULL \
             AND reason IN ('routed', 'spawn_fallback', 'blocked') ORDER BY id DESC LIMIT 1",
        )
        .bind(task_id)
        .fetch_optional(&self.reader)
        .await?)
    }
}
