//! Spawned runs on PostgreSQL: a run is recorded together with its claim and its agent's token,
//! sampled while it lives, and ended with its token revoked (and, for a run in a git worktree,
//! its branch recorded, and added to the deliverables of the task it completed, that task's row
//! locked while its result is rewritten).

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{PgConnection, Row};

use crate::domain::{
    BranchTip, Change, NewEvent, Principal, Role, Routed, Run, RunStatus, RunWorktree, TaskResult, Timestamp,
};
use crate::store::{Claimed, LiveRun, Runs, StoreError, StoreResult};

use super::agents::upsert_token;
use super::lifecycle::claim_in;
use super::routing::set_routing;
use super::rows::{self, json, to_json, RUN_COLUMNS};
use super::Postgres;
use crate::store::announce::Announce;

/// Adds branch `branch` (holding `tip`) to the deliverables of task `task_id` when the run whose
/// claim had fence `fence` completed it; a deliverable naming the same branch is replaced (its
/// note gains the head). A branch without commits delivers nothing. The task's row is locked
/// before its result is read, so a concurrent change to it cannot be overwritten.
async fn add_branch_deliverable(
    conn: &mut PgConnection,
    task_id: i64,
    fence: i64,
    branch: &str,
    tip: &BranchTip,
    now: Timestamp,
) -> StoreResult<()> {
    let Some(deliverable) = tip.deliverable(branch) else {
        return Ok(());
    };
    // The fence grows with every claim and a completion keeps it: this run completed the task.
    let result: Option<Option<String>> = sqlx::query_scalar(
        "SELECT result FROM tasks WHERE id = $1 AND status = 'completed' AND fence = $2 FOR UPDATE",
    )
    .bind(task_id)
    .bind(fence)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(Some(result)) = result else {
        return Ok(());
    };
    let mut result: TaskResult = json("result", &result)?;
    result
        .deliverables
        .retain(|d| !(d.kind == deliverable.kind && d.reference == deliverable.reference));
    result.deliverables.push(deliverable);
    sqlx::query("UPDATE tasks SET result = $2, updated_at = $3 WHERE id = $1")
        .bind(task_id)
        .bind(to_json(&result))
        .bind(now.millis())
        .execute(conn)
        .await?;
    Ok(())
}

/// Run `id` as it stands; not found is a refusal.
async fn find_run(conn: &mut PgConnection, id: i64) -> StoreResult<Run> {
    let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::not_found(format!("run #{id}")))?;
    rows::run(&row)
}

#[async_trait::async_trait]
impl Runs for Postgres {
    async fn start_run(
        &self,
        task_id: i64,
        agent_type: &str,
        token_hash: &str,
        lease: Duration,
        reason: &str,
    ) -> StoreResult<(Run, Claimed, Principal)> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (task_id, agent_type, status, holder, started_at, node) \
             VALUES ($1, $2, 'starting', '', $3, $4) RETURNING id",
        )
        .bind(task_id)
        .bind(agent_type)
        .bind(now)
        .bind(&self.options.node)
        .fetch_one(tx.db())
        .await?;
        let row = sqlx::query(&format!(
            "UPDATE runs SET holder = 'run-' || id WHERE id = $1 RETURNING {RUN_COLUMNS}"
        ))
        .bind(id)
        .fetch_one(tx.db())
        .await?;
        let run = rows::run(&row)?;
        let who = upsert_token(
            &mut tx,
            &run.holder,
            "spawned",
            Role::Agent,
            token_hash,
            Some(task_id),
        )
        .await?;
        let claim = claim_in(&mut tx, task_id, &who, lease, &self.options.human_kinds).await?;
        let reason = format!("{reason}: run #{} of {agent_type}", run.id);
        set_routing(&mut tx, task_id, Routed::Spawn, &reason, false).await?;
        self.commit(tx, (run, claim, who)).await
    }

    async fn run_worktree(&self, run_id: i64, worktree: &RunWorktree) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE runs SET repo = $2, worktree = $3, branch = $4, base = $5 WHERE id = $1")
            .bind(run_id)
            .bind(&worktree.repo)
            .bind(&worktree.path)
            .bind(&worktree.branch)
            .bind(&worktree.base)
            .execute(tx.db())
            .await?;
        self.commit(tx, ()).await
    }

    async fn run_started(
        &self,
        run: &Run,
        fence: i64,
        pid: i64,
        pid_started_at: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let branch: Option<String> = sqlx::query_scalar(
            "UPDATE runs SET status = 'running', fence = $2, pid = $3, pid_started_at = $4 WHERE id = $1 \
             RETURNING branch",
        )
        .bind(run.id)
        .bind(fence)
        .bind(pid)
        .bind(pid_started_at)
        .fetch_optional(tx.db())
        .await?
        .ok_or_else(|| StoreError::not_found(format!("run #{}", run.id)))?;
        tx.event(NewEvent::task(
            run.task_id,
            &run.holder,
            Change::RunStarted {
                run_id: run.id,
                agent_type: run.agent_type.clone(),
                pid,
                fence,
                branch,
            },
        ));
        self.commit(tx, ())
            .await
            .inspect(|()| self.options.telemetry.run_started(&run.agent_type))
    }

    async fn run_sampled(&self, run_id: i64, cpu_percent: f64, memory_bytes: i64) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE runs SET cpu_percent = $2, memory_bytes = $3 WHERE id = $1")
            .bind(run_id)
            .bind(cpu_percent)
            .bind(memory_bytes)
            .execute(tx.db())
            .await?;
        self.commit(tx, ()).await
    }

    async fn run_ended(
        &self,
        run: &Run,
        status: RunStatus,
        exit_code: Option<i64>,
        error: Option<String>,
        tip: Option<BranchTip>,
    ) -> StoreResult<Run> {
        let mut tx = self.begin().await?;
        let now = tx.now;
        let row = sqlx::query(&format!(
            "UPDATE runs SET status = $2, exit_code = $3, error = $4, ended_at = $5, \
             branch_head = COALESCE($6, branch_head), branch_commits = COALESCE($7, branch_commits) \
             WHERE id = $1 AND status IN ('starting', 'running') RETURNING {RUN_COLUMNS}"
        ))
        .bind(run.id)
        .bind(status.as_str())
        .bind(exit_code)
        .bind(&error)
        .bind(now.millis())
        .bind(tip.as_ref().map(|t| t.head.clone()))
        .bind(tip.as_ref().map(|t| t.commits))
        .fetch_optional(tx.db())
        .await?;
        let Some(row) = row else {
            // Ended already (by its node, or settled by the leader): the first ending stands.
            drop(tx);
            let mut conn = self.conn().await?;
            return find_run(&mut conn, run.id).await;
        };
        let ended = rows::run(&row)?;
        if let (Some(tip), Some(branch), Some(fence)) = (&tip, &ended.branch, ended.fence) {
            add_branch_deliverable(tx.db(), run.task_id, fence, branch, tip, now).await?;
        }
        // The run's token dies with it (a hash no token can have), and its agent goes offline.
        sqlx::query("UPDATE agents SET token_hash = 'revoked:' || name, status = 'offline' WHERE name = $1")
            .bind(&run.holder)
            .execute(tx.db())
            .await?;
        tx.tokens_changed();
        tx.event(NewEvent::task(
            run.task_id,
            &run.holder,
            Change::RunExited {
                run_id: run.id,
                status,
                exit_code,
                error,
                branch: ended.branch.clone(),
                branch_head: ended.branch_head.clone(),
                branch_commits: ended.branch_commits,
            },
        ));
        tx.capacity_freed();
        self.commit(tx, ended)
            .await
            .inspect(|_| self.options.telemetry.run_ended(&run.agent_type, status.as_str()))
    }

    async fn run(&self, id: i64) -> StoreResult<Run> {
        let mut conn = self.conn().await?;
        find_run(&mut conn, id).await
    }

    async fn list_runs(
        &self,
        status: Option<RunStatus>,
        task_id: Option<i64>,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Run>> {
        sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR status = $1) \
             AND ($2::bigint IS NULL OR task_id = $2) AND ($3::bigint IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(status.map(RunStatus::as_str))
        .bind(task_id)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::run)
        .collect()
    }

    async fn live_runs(&self) -> StoreResult<Vec<LiveRun>> {
        sqlx::query(&format!(
            "SELECT {RUN_COLUMNS}, pid_started_at FROM runs \
             WHERE status IN ('starting', 'running') AND node IN ($1, '') ORDER BY id"
        ))
        .bind(&self.options.node)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(LiveRun {
                run: rows::run(row)?,
                pid_started_at: row.try_get(20)?,
            })
        })
        .collect()
    }

    async fn orphaned_runs(&self, silence: Duration) -> StoreResult<Vec<Run>> {
        sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs r WHERE status IN ('starting', 'running') \
             AND node NOT IN ($1, '') AND NOT EXISTS \
               (SELECT 1 FROM nodes n WHERE n.id = r.node AND n.last_heartbeat >= taskyard_now_ms() - $2) \
             ORDER BY id"
        ))
        .bind(&self.options.node)
        .bind(i64::try_from(silence.as_millis()).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::run)
        .collect()
    }

    async fn live_run_counts(&self) -> StoreResult<(usize, HashMap<String, usize>)> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT agent_type, COUNT(*), COUNT(*) FILTER (WHERE node IN ($1, '')) FROM runs \
             WHERE status IN ('starting', 'running') GROUP BY agent_type",
        )
        .bind(&self.options.node)
        .fetch_all(&self.pool)
        .await?;
        let here = rows
            .iter()
            .map(|(_, _, mine)| usize::try_from(*mine).unwrap_or(0))
            .sum();
        let per: HashMap<String, usize> = rows
            .into_iter()
            .map(|(agent_type, n, _)| (agent_type, usize::try_from(n).unwrap_or(0)))
            .collect();
        Ok((here, per))
    }
}
