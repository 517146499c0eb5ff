//! Loop records and maintenance on PostgreSQL: each loop run with its `loop.ran` event (the
//! newest 200 per loop kept), stall flags, and settling pending tasks whose dependencies all
//! finished. Several servers may run the same loop at once: stall flags are one conditional
//! update, and settling locks each pending task it settles, leaving tasks another change holds
//! for the next pass.

use std::collections::HashMap;
use std::time::Duration;

use crate::domain::lifecycle::waiting_on;
use crate::domain::{Because, BlockedBy, Change, NewEvent, Status, Timestamp};
use crate::store::{LoopRun, NewLoopRun, StoreError, StoreResult, Upkeep};

use super::deps;
use super::rows::{loop_run, LOOP_RUN_COLUMNS};
use super::Postgres;
use crate::store::announce::Announce;

/// How many run records are kept per loop.
const KEEP_PER_LOOP: i64 = 200;

/// `d` in whole milliseconds (saturating).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Upkeep for Postgres {
    async fn record_loop_run(&self, run: NewLoopRun) -> StoreResult<LoopRun> {
        let (name, ok) = (run.loop_name.clone(), run.ok);
        let recorded = async {
            let mut tx = self.begin().await?;
            let row = sqlx::query(&format!(
                "INSERT INTO loop_runs (loop_name, kind, started_at, finished_at, ok, summary, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {LOOP_RUN_COLUMNS}"
            ))
            .bind(&run.loop_name)
            .bind(&run.kind)
            .bind(run.started_at.millis())
            // On the clock `started_at` was read from, so a run never ends before it began.
            .bind(Timestamp::now().millis())
            .bind(run.ok)
            .bind(&run.summary)
            .bind(run.details.to_string())
            .fetch_one(tx.db())
            .await?;
            let recorded = loop_run(&row)?;
            sqlx::query(
                "DELETE FROM loop_runs WHERE loop_name = $1 AND id <= \
                 (SELECT id FROM loop_runs WHERE loop_name = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&run.loop_name)
            .bind(KEEP_PER_LOOP)
            .execute(tx.db())
            .await?;
            tx.event(NewEvent::general(
                &format!("loop:{}", run.loop_name),
                Change::LoopRan {
                    name: run.loop_name,
                    kind: run.kind,
                    ok: run.ok,
                    summary: run.summary,
                    run_id: recorded.id,
                },
            ));
            self.commit(tx, recorded).await
        }
        .await;
        recorded.inspect(|_| self.options.telemetry.loop_ran(&name, ok))
    }

    async fn loop_runs(&self, loop_name: &str, limit: i64) -> StoreResult<Vec<LoopRun>> {
        sqlx::query(&format!(
            "SELECT {LOOP_RUN_COLUMNS} FROM loop_runs WHERE loop_name = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(loop_name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(loop_run)
        .collect()
    }

    async fn last_loop_runs(&self) -> StoreResult<HashMap<String, (LoopRun, i64)>> {
        let mut conn = self.conn().await?;
        let last = sqlx::query(&format!(
            "SELECT {LOOP_RUN_COLUMNS} FROM loop_runs WHERE id IN (SELECT MAX(id) FROM loop_runs GROUP BY loop_name)"
        ))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(loop_run)
        .collect::<StoreResult<Vec<_>>>()?;
        let failures: Vec<(String, i64)> =
            sqlx::query_as("SELECT loop_name, COUNT(*) FROM loop_runs WHERE NOT ok GROUP BY loop_name")
                .fetch_all(&mut *conn)
                .await?;
        let failures: HashMap<String, i64> = failures.into_iter().collect();
        Ok(last
            .into_iter()
            .map(|run| {
                let failed = failures.get(&run.loop_name).copied().unwrap_or(0);
                (run.loop_name.clone(), (run, failed))
            })
            .collect())
    }

    async fn flag_stalled_tasks(&self, quiet: Duration) -> StoreResult<Vec<i64>> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        let stalled: Vec<(i64, String, i64)> = sqlx::query_as(
            "WITH flagged AS ( \
                 UPDATE tasks SET stalled_at = $1 \
                 WHERE status = 'in_progress' AND stalled_at IS NULL AND lease_expires_at > $1 \
                   AND COALESCE(last_progress_at, claimed_at) < $2 \
                 RETURNING id, lease_holder, COALESCE(last_progress_at, claimed_at) AS last) \
             SELECT id, lease_holder, last FROM flagged ORDER BY id",
        )
        .bind(now)
        .bind(now - millis(quiet))
        .fetch_all(tx.db())
        .await?;
        tx.events(stalled.iter().map(|(id, holder, last)| NewEvent {
            task_id: Some(*id),
            actor: Some("loop:stall-detector".into()),
            change: Change::TaskStalled {
                holder: holder.clone(),
                last_progress_at: Timestamp(*last),
                quiet_seconds: quiet.as_secs(),
            },
        }));
        let ids = stalled.into_iter().map(|(id, _, _)| id).collect();
        self.commit(tx, ids).await
    }

    async fn settle_pending(&self) -> StoreResult<(usize, usize)> {
        let mut tx = self.begin().await?;
        // Each task is locked as it is found (in id order); one another change holds is
        // settled by that change or by the next pass.
        let settled: Vec<(i64, String)> = sqlx::query_as(
            "SELECT t.id, t.depends_on FROM tasks t WHERE t.status = 'pending' \
             AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks u ON u.id = d.depends_on_id \
                             WHERE d.task_id = t.id AND u.status NOT IN ('completed', 'failed', 'cancelled')) \
             ORDER BY t.id FOR UPDATE OF t SKIP LOCKED",
        )
        .fetch_all(tx.db())
        .await?;
        let (mut released, mut blocked) = (0, 0);
        for (id, depends_on) in settled {
            // A mangled list must not read as "no dependencies" and release the task.
            let ids: Vec<i64> = serde_json::from_str(&depends_on)
                .map_err(|e| StoreError::Corrupt(format!("depends_on of task #{id}: {e}")))?;
            let (status, reason) = waiting_on(&deps::statuses(tx.db(), &ids).await?);
            if status == Status::Pending {
                continue;
            }
            sqlx::query("UPDATE tasks SET status = $2, status_reason = $3, updated_at = $4 WHERE id = $1")
                .bind(id)
                .bind(status.as_str())
                .bind(&reason)
                .bind(tx.now.millis())
                .execute(tx.db())
                .await?;
            let change = if status == Status::Available {
                released += 1;
                tx.ready(id);
                Change::TaskReady {
                    dependency: Because::Settled(true),
                    reason,
                }
            } else {
                blocked += 1;
                Change::TaskBlocked {
                    reason: reason.unwrap_or_default(),
                    by: BlockedBy::Dependency {
                        dependency: Because::Settled(true),
                    },
                }
            };
            tx.event(NewEvent::task(id, "loop:dependency-release", change));
        }
        self.commit(tx, (released, blocked)).await
    }
}
