//! Spawned runs on SQLite: a run is recorded together with its claim and its agent's token,
//! sampled while it lives, and ended with its token revoked (and, for a run in a git worktree,
//! its branch recorded, and added to the deliverables of the task it completed).

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::{
    BranchTip, Change, NewEvent, Principal, Role, Routed, Run, RunStatus, RunWorktree, TaskResult, Timestamp,
};
use crate::store::{Claimed, LiveRun, Runs, StoreError, StoreResult};

use super::agents::upsert_token;
use super::lifecycle::claim_in;
use super::routing::set_routing;
use super::rows::{self, json, to_json, RUN_COLUMNS};
use super::Sqlite;
use crate::store::announce::Announce;

/// Adds branch `branch` (holding `tip`) to the deliverables of task `task_id` when the run whose
/// claim had fence `fence` completed it; a deliverable naming the same branch is replaced (its
/// note gains the head). A branch without commits delivers nothing.
fn add_branch_deliverable(
    tx: &Connection,
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
    let result: Option<Option<String>> = tx
        .prepare_cached("SELECT result FROM tasks WHERE id = ?1 AND status = 'completed' AND fence = ?2")?
        .query_row(params![task_id, fence], |row| row.get(0))
        .optional()?;
    let Some(Some(result)) = result else {
        return Ok(());
    };
    let mut result: TaskResult = json("result", &result)?;
    result
        .deliverables
        .retain(|d| !(d.kind == deliverable.kind && d.reference == deliverable.reference));
    result.deliverables.push(deliverable);
    tx.prepare_cached("UPDATE tasks SET result = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![task_id, to_json(&result), now.millis()])?;
    Ok(())
}

fn find_run(conn: &Connection, id: i64) -> StoreResult<Run> {
    conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
        .query_row([id], rows::run)
        .optional()?
        .transpose()?
        .ok_or_else(|| StoreError::not_found(format!("run #{id}")))
}

#[async_trait::async_trait]
impl Runs for Sqlite {
    async fn start_run(
        &self,
        task_id: i64,
        agent_type: &str,
        token_hash: &str,
        lease: Duration,
        reason: &str,
    ) -> StoreResult<(Run, Claimed, Principal)> {
        let (agent_type, token_hash, reason) =
            (agent_type.to_string(), token_hash.to_string(), reason.to_string());
        let kinds = self.options.human_kinds.clone();
        let node = self.options.node.clone();
        self.write(move |tx| {
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO runs (task_id, agent_type, status, holder, started_at, node) \
                     VALUES (?1, ?2, 'starting', '', ?3, ?4) RETURNING id",
                )?
                .query_row(params![task_id, agent_type, tx.now.millis(), node], |row| {
                    row.get(0)
                })?;
            tx.execute("UPDATE runs SET holder = 'run-' || id WHERE id = ?1", [id])?;
            let run = find_run(tx, id)?;
            let who = upsert_token(
                tx,
                &run.holder,
                "spawned",
                Role::Agent,
                &token_hash,
                Some(task_id),
            )?;
            let claim = claim_in(tx, task_id, &who, lease, &kinds)?;
            let reason = format!("{reason}: run #{} of {agent_type}", run.id);
            set_routing(tx, task_id, Routed::Spawn, &reason, false)?;
            Ok((run, claim, who))
        })
        .await
    }

    async fn run_worktree(&self, run_id: i64, worktree: &RunWorktree) -> StoreResult<()> {
        let w = worktree.clone();
        self.write(move |tx| {
            tx.execute(
                "UPDATE runs SET repo = ?2, worktree = ?3, branch = ?4, base = ?5 WHERE id = ?1",
                params![run_id, w.repo, w.path, w.branch, w.base],
            )?;
            Ok(())
        })
        .await
    }

    async fn run_started(
        &self,
        run: &Run,
        fence: i64,
        pid: i64,
        pid_started_at: Option<i64>,
    ) -> StoreResult<()> {
        let run = run.clone();
        let agent_type = run.agent_type.clone();
        self.write(move |tx| {
            tx.execute(
                "UPDATE runs SET status = 'running', fence = ?2, pid = ?3, pid_started_at = ?4 WHERE id = ?1",
                params![run.id, fence, pid, pid_started_at],
            )?;
            let branch = find_run(tx, run.id)?.branch;
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
            Ok(())
        })
        .await
        .inspect(|()| self.options.telemetry.run_started(&agent_type))
    }

    async fn run_sampled(&self, run_id: i64, cpu_percent: f64, memory_bytes: i64) -> StoreResult<()> {
        self.write(move |tx| {
            tx.prepare_cached("UPDATE runs SET cpu_percent = ?2, memory_bytes = ?3 WHERE id = ?1")?
                .execute(params![run_id, cpu_percent, memory_bytes])?;
            Ok(())
        })
        .await
    }

    async fn run_ended(
        &self,
        run: &Run,
        status: RunStatus,
        exit_code: Option<i64>,
        error: Option<String>,
        tip: Option<BranchTip>,
    ) -> StoreResult<Run> {
        let run = run.clone();
        let agent_type = run.agent_type.clone();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE runs SET status = ?2, exit_code = ?3, error = ?4, ended_at = ?5, \
                 branch_head = COALESCE(?6, branch_head), branch_commits = COALESCE(?7, branch_commits) \
                 WHERE id = ?1 AND status IN ('starting', 'running')",
                params![
                    run.id,
                    status.as_str(),
                    exit_code,
                    error,
                    tx.now.millis(),
                    tip.as_ref().map(|t| t.head.clone()),
                    tip.as_ref().map(|t| t.commits),
                ],
            )?;
            let ended = find_run(tx, run.id)?;
            if changed == 0 {
                // Ended already (by its node, or settled by the leader): the first ending stands.
                return Ok((ended, false));
            }
            if let (Some(tip), Some(branch), Some(fence)) = (&tip, &ended.branch, ended.fence) {
                let now = tx.now;
                add_branch_deliverable(tx, run.task_id, fence, branch, tip, now)?;
            }
            // The run's token dies with it (a hash no token can have), and its agent goes offline.
            tx.execute(
                "UPDATE agents SET token_hash = 'revoked:' || name, status = 'offline' WHERE name = ?1",
                [&run.holder],
            )?;
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
            Ok((ended, true))
        })
        .await
        .map(|(ended, now)| {
            if now {
                self.options.telemetry.run_ended(&agent_type, status.as_str());
            }
            ended
        })
    }

    async fn run(&self, id: i64) -> StoreResult<Run> {
        self.read(move |conn| find_run(conn, id)).await
    }

    async fn list_runs(
        &self,
        status: Option<RunStatus>,
        task_id: Option<i64>,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Run>> {
        self.read(move |conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR task_id = ?2) \
                     AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
                ))?
                .query_map(params![status.map(RunStatus::as_str), task_id, before_id, limit], rows::run)?
                .collect::<Result<Vec<_>, _>>()?;
            found.into_iter().collect()
        })
        .await
    }

    async fn live_runs(&self) -> StoreResult<Vec<LiveRun>> {
        let node = self.options.node.clone();
        self.read(move |conn| {
            let ids = conn
                .prepare_cached(
                    "SELECT id, pid_started_at FROM runs \
                     WHERE status IN ('starting', 'running') AND node IN (?1, '') ORDER BY id",
                )?
                .query_map([node], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            ids.into_iter()
                .map(|(id, pid_started_at)| {
                    Ok(LiveRun {
                        run: find_run(conn, id)?,
                        pid_started_at,
                    })
                })
                .collect()
        })
        .await
    }

    async fn orphaned_runs(&self, silence: Duration) -> StoreResult<Vec<Run>> {
        let node = self.options.node.clone();
        let since = Timestamp::now()
            .millis()
            .saturating_sub(i64::try_from(silence.as_millis()).unwrap_or(i64::MAX));
        self.read(move |conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs r WHERE status IN ('starting', 'running') \
                     AND node NOT IN (?1, '') AND NOT EXISTS \
                       (SELECT 1 FROM nodes n WHERE n.id = r.node AND n.last_heartbeat >= ?2) \
                     ORDER BY id"
                ))?
                .query_map(params![node, since], rows::run)?
                .collect::<Result<Vec<_>, _>>()?;
            found.into_iter().collect()
        })
        .await
    }

    async fn live_run_counts(&self) -> StoreResult<(usize, HashMap<String, usize>)> {
        let node = self.options.node.clone();
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT agent_type, COUNT(*), SUM(node IN (?1, '')) FROM runs \
                     WHERE status IN ('starting', 'running') GROUP BY agent_type",
                )?
                .query_map([node], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let here = rows
                .iter()
                .map(|(_, _, mine)| usize::try_from(*mine).unwrap_or(0))
                .sum();
            let per = rows
                .into_iter()
                .map(|(agent_type, n, _)| (agent_type, usize::try_from(n).unwrap_or(0)))
                .collect();
            Ok((here, per))
        })
        .await
    }
}
