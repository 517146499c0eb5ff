//! Spawned runs and routing decisions: the rows the spawner keeps, each change with its event.

use std::collections::HashMap;

use serde_json::json;

use crate::domain::event::NewEvent;
use crate::domain::{Run, RunStatus, Task, Timestamp};

use super::rows::{TaskRow, TASK_COLUMNS};
use super::{Store, StoreError, StoreResult, Wake};

const RUN_COLUMNS: &str = "id, task_id, agent_type, status, holder, fence, pid, started_at, ended_at, \
    exit_code, cpu_percent, memory_bytes, error";

#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    task_id: i64,
    agent_type: String,
    status: String,
    holder: String,
    fence: Option<i64>,
    pid: Option<i64>,
    started_at: i64,
    ended_at: Option<i64>,
    exit_code: Option<i64>,
    cpu_percent: Option<f64>,
    memory_bytes: Option<i64>,
    error: Option<String>,
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;
    fn try_from(r: RunRow) -> StoreResult<Run> {
        Ok(Run {
            id: r.id,
            task_id: r.task_id,
            agent_type: r.agent_type,
            status: r.status.parse().map_err(StoreError::Corrupt)?,
            holder: r.holder,
            fence: r.fence,
            pid: r.pid,
            started_at: Timestamp(r.started_at),
            ended_at: r.ended_at.map(Timestamp),
            exit_code: r.exit_code,
            cpu_percent: r.cpu_percent,
            memory_bytes: r.memory_bytes,
            error: r.error,
        })
    }
}

/// A live run as reconciliation sees it.
#[derive(Debug, Clone)]
pub struct LiveRun {
    /// The run.
    pub run: Run,
    /// The recorded start time of its process (seconds since the epoch).
    pub pid_started_at: Option<i64>,
}

impl Store {
    /// Records a new run of `agent_type` for `task_id` (status `starting`); its lease holder
    /// name is `run-<id>`.
    pub async fn create_run(&self, task_id: i64, agent_type: &str) -> StoreResult<Run> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (task_id, agent_type, status, holder, started_at) \
             VALUES (?1, ?2, 'starting', '', ?3) RETURNING id",
        )
        .bind(task_id)
        .bind(agent_type)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await?;
        let row: RunRow = sqlx::query_as(&format!(
            "UPDATE runs SET holder = 'run-' || id WHERE id = ? RETURNING {RUN_COLUMNS}"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit(self).await?;
        Run::try_from(row)
    }

    /// The process started: record it with a `run.started` event.
    pub async fn run_started(
        &self,
        run: &Run,
        fence: i64,
        pid: i64,
        pid_started_at: Option<i64>,
    ) -> StoreResult<()> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE runs SET status = 'running', fence = ?2, pid = ?3, pid_started_at = ?4 WHERE id = ?1",
        )
        .bind(run.id)
        .bind(fence)
        .bind(pid)
        .bind(pid_started_at)
        .execute(&mut *tx)
        .await?;
        let event = NewEvent::task(
            "run.started",
            run.task_id,
            &run.holder,
            json!({"run_id": run.id, "agent_type": run.agent_type, "pid": pid, "fence": fence}),
        );
        self.commit(tx, now, vec![event], Wake::default()).await
    }

    /// Stores a CPU and memory sample of a live run.
    pub async fn run_sampled(&self, run_id: i64, cpu_percent: f64, memory_bytes: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE runs SET cpu_percent = ?2, memory_bytes = ?3 WHERE id = ?1")
            .bind(run_id)
            .bind(cpu_percent)
            .bind(memory_bytes)
            .execute(&mut *tx)
            .await?;
        tx.commit(self).await
    }

    /// The run ended: record how, with a `run.exited` event. Ending frees capacity, so waiting
    /// work is woken.
    pub async fn run_ended(
        &self,
        run: &Run,
        status: RunStatus,
        exit_code: Option<i64>,
        error: Option<String>,
    ) -> StoreResult<Run> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let row: RunRow = sqlx::query_as(&format!(
            "UPDATE runs SET status = ?2, exit_code = ?3, error = ?4, ended_at = ?5 WHERE id = ?1 \
             RETURNING {RUN_COLUMNS}"
        ))
        .bind(run.id)
        .bind(status.as_str())
        .bind(exit_code)
        .bind(&error)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await?;
        // The run's token dies with it (a hash no token can have).
        sqlx::query("UPDATE agents SET token_hash = 'revoked:' || name WHERE name = ?")
            .bind(&run.holder)
            .execute(&mut *tx)
            .await?;
        let event = NewEvent::task(
            "run.exited",
            run.task_id,
            &run.holder,
            json!({"run_id": run.id, "status": status, "exit_code": exit_code, "error": error}),
        );
        self.commit(tx, now, vec![event], super::Wake::capacity()).await?;
        self.tokens_changed();
        Run::try_from(row)
    }

    /// One run.
    pub async fn run(&self, id: i64) -> StoreResult<Run> {
        let row: Option<RunRow> = sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(Run::try_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("run #{id}")))
    }

    /// Runs, newest first, optionally of one status and/or task; `before_id` pages.
    pub async fn list_runs(
        &self,
        status: Option<RunStatus>,
        task_id: Option<i64>,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Run>> {
        let rows: Vec<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR task_id = ?2) \
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
        ))
        .bind(status.map(RunStatus::as_str))
        .bind(task_id)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Run::try_from).collect()
    }

    /// Live runs (starting or running) with their process start times.
    pub async fn live_runs(&self) -> StoreResult<Vec<LiveRun>> {
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, pid_started_at FROM runs WHERE status IN ('starting', 'running') ORDER BY id",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, pid_started_at) in rows {
            out.push(LiveRun {
                run: self.run(id).await?,
                pid_started_at,
            });
        }
        Ok(out)
    }

    /// Live runs in total and per agent type.
    pub async fn live_run_counts(&self) -> StoreResult<(usize, HashMap<String, usize>)> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT agent_type, COUNT(*) FROM runs WHERE status IN ('starting', 'running') GROUP BY agent_type",
        )
        .fetch_all(&self.reader)
        .await?;
        let per: HashMap<String, usize> = rows.into_iter().map(|(t, n)| (t, n as usize)).collect();
        Ok((per.values().sum(), per))
    }

    /// Available tasks the router should look at, most urgent first: not `route = agent`, not
    /// already with people, not backing off, attempts left.
    pub async fn routable_tasks(&self, limit: i64) -> StoreResult<Vec<Task>> {
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'available' AND not_before <= ?1 \
             AND attempts < max_attempts AND route <> 'agent' AND routed_to IS NOT 'human' \
             ORDER BY priority, id LIMIT ?2"
        ))
        .bind(Timestamp::now().millis())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Task::try_from).collect()
    }

    /// Records a routing decision; a `task.routed` event is written only when the decision or
    /// its reason changed, so a task waiting for capacity does not fill the log.
    pub async fn record_routing(&self, task_id: i64, routed_to: &str, reason: &str) -> StoreResult<bool> {
        self.route(task_id, routed_to, reason, false).await
    }

    /// Records that a task meant to be spawned went to people instead (no command, or its
    /// agent could not start).
    pub async fn record_spawn_fallback(&self, task_id: i64, reason: &str) -> StoreResult<bool> {
        self.route(task_id, "human", reason, true).await
    }

    async fn route(&self, task_id: i64, routed_to: &str, reason: &str, fallback: bool) -> StoreResult<bool> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE tasks SET routed_to = ?2, routed_reason = ?3 WHERE id = ?1 \
             AND (routed_to IS NOT ?2 OR routed_reason IS NOT ?3)",
        )
        .bind(task_id)
        .bind(routed_to)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let events = if changed {
            vec![NewEvent::task(
                "task.routed",
                task_id,
                "router",
                json!({"decision": routed_to, "reason": reason, "fallback": fallback}),
            )]
        } else {
            Vec::new()
        };
        self.commit(tx, now, events, Wake::default()).await?;
        Ok(changed)
    }

    /// True when `task_id` is `scope` or one of its subtasks (at any depth).
    pub async fn within_scope(&self, scope: i64, task_id: i64) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT t.parent_id FROM tasks t JOIN up ON t.id = up.id \
                                       WHERE t.parent_id IS NOT NULL) \
             SELECT id FROM up WHERE id = ?2",
        )
        .bind(task_id)
        .bind(scope)
        .fetch_optional(&self.reader)
        .await?;
        Ok(found.is_some())
    }
}
