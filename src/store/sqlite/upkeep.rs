//! Loop records and maintenance on SQLite: each loop run with its `loop.ran` event (the newest
//! 200 per loop kept), stall flags, and settling pending tasks whose dependencies all finished.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{params, Connection};

use crate::domain::lifecycle::waiting_on;
use crate::domain::{Because, BlockedBy, Change, NewEvent, Status, Timestamp};
use crate::store::{LoopRun, NewLoopRun, StoreError, StoreResult, Upkeep};

use super::deps;
use super::rows::{self, LOOP_RUN_COLUMNS};
use super::Sqlite;
use crate::store::announce::Announce;

/// How many run records are kept per loop.
const KEEP_PER_LOOP: i64 = 200;

fn loop_runs(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Vec<LoopRun>> {
    let found = conn
        .prepare_cached(sql)?
        .query_map(params, rows::loop_run)?
        .collect::<Result<Vec<_>, _>>()?;
    found.into_iter().collect()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Upkeep for Sqlite {
    async fn record_loop_run(&self, run: NewLoopRun) -> StoreResult<LoopRun> {
        let (name, ok) = (run.loop_name.clone(), run.ok);
        self.write(move |tx| {
            let recorded = tx
                .prepare_cached(&format!(
                    "INSERT INTO loop_runs (loop_name, kind, started_at, finished_at, ok, summary, details) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING {LOOP_RUN_COLUMNS}"
                ))?
                .query_row(
                    params![
                        run.loop_name,
                        run.kind,
                        run.started_at.millis(),
                        tx.now.millis(),
                        run.ok,
                        run.summary,
                        run.details.to_string()
                    ],
                    rows::loop_run,
                )??;
            tx.execute(
                "DELETE FROM loop_runs WHERE loop_name = ?1 AND id <= \
                 (SELECT id FROM loop_runs WHERE loop_name = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![run.loop_name, KEEP_PER_LOOP],
            )?;
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
            Ok(recorded)
        })
        .await
        .inspect(|_| self.options.telemetry.loop_ran(&name, ok))
    }

    async fn loop_runs(&self, loop_name: &str, limit: i64) -> StoreResult<Vec<LoopRun>> {
        let name = loop_name.to_string();
        self.read(move |conn| {
            loop_runs(
                conn,
                &format!(
                    "SELECT {LOOP_RUN_COLUMNS} FROM loop_runs WHERE loop_name = ?1 ORDER BY id DESC LIMIT ?2"
                ),
                params![name, limit],
            )
        })
        .await
    }

    async fn last_loop_runs(&self) -> StoreResult<HashMap<String, (LoopRun, i64)>> {
        self.read(|conn| {
            let last = loop_runs(
                conn,
                &format!(
                    "SELECT {LOOP_RUN_COLUMNS} FROM loop_runs WHERE id IN (SELECT MAX(id) FROM loop_runs GROUP BY loop_name)"
                ),
                [],
            )?;
            let failures: HashMap<String, i64> = conn
                .prepare_cached("SELECT loop_name, COUNT(*) FROM loop_runs WHERE ok = 0 GROUP BY loop_name")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(last
                .into_iter()
                .map(|run| {
                    let failed = failures.get(&run.loop_name).copied().unwrap_or(0);
                    (run.loop_name.clone(), (run, failed))
                })
                .collect())
        })
        .await
    }

    async fn flag_stalled_tasks(&self, quiet: Duration) -> StoreResult<Vec<i64>> {
        self.write(move |tx| {
            let now = tx.now.millis();
            let stalled = tx
                .prepare_cached(
                    "UPDATE tasks SET stalled_at = ?1 \
                     WHERE status = 'in_progress' AND stalled_at IS NULL AND lease_expires_at > ?1 \
                       AND COALESCE(last_progress_at, claimed_at) < ?2 \
                     RETURNING id, lease_holder, COALESCE(last_progress_at, claimed_at)",
                )?
                .query_map(params![now, now - millis(quiet)], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            tx.events(stalled.iter().map(|(id, holder, last)| NewEvent {
                task_id: Some(*id),
                actor: Some("loop:stall-detector".into()),
                change: Change::TaskStalled {
                    holder: holder.clone(),
                    last_progress_at: Timestamp(*last),
                    quiet_seconds: quiet.as_secs(),
                },
            }));
            Ok(stalled.into_iter().map(|(id, _, _)| id).collect())
        })
        .await
    }

    async fn settle_pending(&self) -> StoreResult<(usize, usize)> {
        self.write(|tx| {
            let settled = tx
                .prepare_cached(
                    "SELECT t.id, t.depends_on FROM tasks t WHERE t.status = 'pending' \
                     AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks u ON u.id = d.depends_on_id \
                                     WHERE d.task_id = t.id AND u.status NOT IN ('completed', 'failed', 'cancelled'))",
                )?
                .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let (mut released, mut blocked) = (0, 0);
            for (id, depends_on) in settled {
                // A mangled list must not read as "no dependencies" and release the task.
                let ids: Vec<i64> = serde_json::from_str(&depends_on)
                    .map_err(|e| StoreError::Corrupt(format!("depends_on of task #{id}: {e}")))?;
                let (status, reason) = waiting_on(&deps::statuses(tx, &ids)?);
                if status == Status::Pending {
                    continue;
                }
                tx.execute(
                    "UPDATE tasks SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1",
                    params![id, status.as_str(), reason, tx.now.millis()],
                )?;
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
            Ok((released, blocked))
        })
        .await
    }
}
