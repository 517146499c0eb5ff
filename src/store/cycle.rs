//! The agent work cycle — claim-next, progress, complete — run on the batching writer, where
//! many agents' operations share one transaction. Each operation checks and changes the task
//! in as few statements as it can.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use serde_json::json;

use crate::domain::event::NewEvent;
use crate::domain::input::{CompleteSpec, ProgressSpec};
use crate::domain::{Principal, Task, TaskResult, Timestamp};

use super::leases::{check_hold, claim_event, claimed, ClaimFilter, Claimed, CLAIM_SET};
use super::rows::{to_json, TaskRow, TASK_COLUMNS};
use super::{Store, StoreError, StoreResult};

/// Reads task `id` on the writer's connection.
fn fetch(conn: &Connection, id: i64) -> StoreResult<Task> {
    let row = conn
        .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))?
        .query_row([id], TaskRow::from_sqlite)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("task #{id}")))?;
    Task::try_from(row)
}

/// `UPDATE … RETURNING` the task's columns.
fn update_returning(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Task> {
    let row = conn
        .prepare_cached(sql)?
        .query_row(params, TaskRow::from_sqlite)?;
    Task::try_from(row)
}

/// Pending dependents of `done` whose dependencies are now all completed become available.
/// Returns their ids and events.
fn release_dependents(
    conn: &Connection,
    done: i64,
    now: Timestamp,
    actor: &str,
) -> StoreResult<(Vec<i64>, Vec<NewEvent>)> {
    let mut ready = conn.prepare_cached(
        "UPDATE tasks SET status = 'available', status_reason = NULL, updated_at = ?2 \
         WHERE status = 'pending' AND id IN (SELECT task_id FROM task_deps WHERE depends_on_id = ?1) \
           AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.depends_on_id \
                           WHERE d.task_id = tasks.id AND t.status <> 'completed') \
         RETURNING id",
    )?;
    let ids = ready
        .query_map(rusqlite::params![done, now.millis()], |row| row.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let events = ids
        .iter()
        .map(|id| NewEvent::task("task.ready", *id, actor, json!({"dependency": done})))
        .collect();
    Ok((ids, events))
}

/// What one claim-next attempt on the writer found.
enum Attempt {
    /// The claim (or nothing fits).
    Done(Option<Box<Claimed>>),
    /// Expired leases wait to be reaped first: they may be the best work there is.
    Reap,
}

impl Store {
    /// Claims the best ready task for `who`: capabilities a subset of the filter's, then
    /// priority, then age. Work meant for people goes only to people; `spawn`-routed work
    /// only to the spawner. `None` when nothing fits. Expired leases are returned first.
    pub async fn claim_next(
        &self,
        who: &Principal,
        filter: &ClaimFilter,
        lease: Duration,
    ) -> StoreResult<Option<Claimed>> {
        let mut check_expired = true;
        self.claim_attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        loop {
            let attempt = {
                let who = who.clone();
                let capabilities = to_json(&filter.capabilities);
                let projects = filter.projects.as_ref().map(to_json);
                let human_kinds = to_json(&self.options.human_kinds);
                self.batch
                    .write(move |conn, now| {
                        let claim = claim_next_in(
                            conn,
                            now,
                            &who,
                            capabilities,
                            projects,
                            human_kinds,
                            lease,
                            check_expired,
                        )?;
                        let events = match &claim {
                            Attempt::Done(Some(c)) => vec![claim_event(c)],
                            _ => Vec::new(),
                        };
                        Ok((claim, events, Vec::new()))
                    })
                    .await?
            };
            match attempt {
                Attempt::Done(claim) => return Ok(claim.map(|c| *c)),
                Attempt::Reap => {
                    self.reap_expired_leases().await?;
                    check_expired = false;
                }
            }
        }
    }

    /// Records progress (or, with neither percent nor note, a heartbeat) and renews the lease.
    pub async fn report_progress(&self, id: i64, who: &Principal, spec: ProgressSpec) -> StoreResult<Task> {
        let who = who.clone();
        self.batch
            .write(move |conn, now| {
                check_hold(&fetch(conn, id)?, &who, spec.fence)?;
                let lease_ms: Option<i64> = spec.lease_seconds.map(|s| s as i64 * 1000);
                // A bare heartbeat renews the lease but is not progress: the stall detector
                // still sees silence, and it is not worth an event.
                let reported = spec.percent.is_some() || spec.note.is_some();
                let updated = update_returning(
                    conn,
                    &format!(
                        "UPDATE tasks SET progress_percent = COALESCE(?2, progress_percent), \
                         progress_note = COALESCE(?3, progress_note), updated_at = ?4, \
                         last_progress_at = CASE WHEN ?6 THEN ?4 ELSE last_progress_at END, \
                         stalled_at = CASE WHEN ?6 THEN NULL ELSE stalled_at END, \
                         lease_ms = COALESCE(?5, lease_ms), lease_expires_at = ?4 + COALESCE(?5, lease_ms) \
                         WHERE id = ?1 RETURNING {TASK_COLUMNS}"
                    ),
                    rusqlite::params![id, spec.percent, spec.note, now.millis(), lease_ms, reported],
                )?;
                let events = if reported {
                    vec![NewEvent::task(
                        "task.progress",
                        id,
                        &who.name,
                        json!({"percent": updated.progress.percent, "note": spec.note, "fence": spec.fence}),
                    )]
                } else {
                    Vec::new()
                };
                Ok((updated, events, Vec::new()))
            })
            .await
    }

    /// Completes a task; dependents whose dependencies are now all done become available.
    pub async fn complete(&self, id: i64, who: &Principal, spec: CompleteSpec) -> StoreResult<Task> {
        let who = who.clone();
        self.batch
            .write(move |conn, now| {
                let task = fetch(conn, id)?;
                check_hold(&task, &who, spec.fence)?;
                let result = TaskResult {
                    summary: spec.summary,
                    deliverables: spec.deliverables,
                    time_spent_minutes: spec.time_spent_minutes,
                };
                let updated = update_returning(
                    conn,
                    &format!(
                        "UPDATE tasks SET status = 'completed', status_reason = NULL, result = ?2, \
                         progress_percent = 100, lease_holder = NULL, lease_expires_at = NULL, \
                         completed_at = ?3, updated_at = ?3 WHERE id = ?1 RETURNING {TASK_COLUMNS}"
                    ),
                    rusqlite::params![id, to_json(&result), now.millis()],
                )?;
                let holder = task.lease.map(|l| l.holder).unwrap_or_default();
                let mut events = vec![NewEvent::task(
                    "task.completed",
                    id,
                    &who.name,
                    json!({"holder": holder, "fence": spec.fence, "summary": result.summary}),
                )];
                let (ready, released) = release_dependents(conn, id, now, &who.name)?;
                events.extend(released);
                Ok((updated, events, ready))
            })
            .await
    }
}

/// One claim-next attempt inside the writer's transaction.
#[allow(clippy::too_many_arguments)]
fn claim_next_in(
    conn: &Connection,
    now: Timestamp,
    who: &Principal,
    capabilities: String,
    projects: Option<String>,
    human_kinds: String,
    lease: Duration,
    check_expired: bool,
) -> StoreResult<Attempt> {
    if check_expired {
        let expired: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'in_progress' AND lease_expires_at <= ?1)",
            )?
            .query_row([now.millis()], |row| row.get(0))?;
        if expired {
            return Ok(Attempt::Reap);
        }
    }
    let row = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET {CLAIM_SET} WHERE id = ( \
               SELECT t.id FROM tasks t \
               WHERE t.status = 'available' AND t.not_before <= ?4 AND t.attempts < t.max_attempts \
                 AND (?6 IS NULL OR t.project IN (SELECT value FROM json_each(?6))) \
                 AND NOT EXISTS (SELECT 1 FROM json_each(t.capabilities) c \
                                 WHERE c.value NOT IN (SELECT value FROM json_each(?5))) \
                 AND (t.route <> 'spawn' OR (?7 AND t.routed_to IS 'human')) \
                 AND (?7 OR t.routed_to IS NOT 'human') \
                 AND (?7 OR (t.route <> 'human' AND (t.route <> 'auto' \
                      OR t.kind NOT IN (SELECT value FROM json_each(?8))))) \
               ORDER BY t.priority, t.id LIMIT 1) \
             RETURNING {TASK_COLUMNS}"
        ))?
        .query_row(
            rusqlite::params![
                who.name,
                now.plus_millis(lease.as_millis() as i64).millis(),
                lease.as_millis() as i64,
                now.millis(),
                capabilities,
                projects,
                who.is_person(),
                human_kinds,
            ],
            TaskRow::from_sqlite,
        )
        .optional()?;
    Ok(Attempt::Done(row.map(claimed).transpose()?.map(Box::new)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::input::CreateTask;
    use crate::domain::Role;
    use crate::store::StoreOptions;

    #[tokio::test]
    async fn a_claim_whose_caller_left_before_it_ran_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default())
            .await
            .unwrap();
        let admin = Principal::admin();
        let body: CreateTask = serde_json::from_value(json!({"title": "only one"})).unwrap();
        let (task, _) = store.create_task(body.parse().unwrap(), &admin).await.unwrap();
        let agent = Principal {
            agent_id: None,
            name: "agent".into(),
            role: Role::Agent,
            kind: "script".into(),
            capabilities: vec![],
            scope: None,
        };
        let lease = Duration::from_secs(60);

        // While an async write holds the gate, the writer cannot run the queued claim; its
        // caller gives up meanwhile.
        let held = store.begin_write().await.unwrap();
        let anything = ClaimFilter::default();
        let mut gone = Box::pin(store.claim_next(&agent, &anything, lease));
        assert!(futures::poll!(gone.as_mut()).is_pending());
        drop(gone);
        drop(held);

        let claimed = store
            .claim_next(&agent, &ClaimFilter::default(), lease)
            .await
            .unwrap()
            .expect("the task is still there to claim");
        assert_eq!(claimed.task.id, task.id);
        assert_eq!(
            claimed.lease.fence, 1,
            "no claim was made for the caller that left"
        );
        assert_eq!(claimed.task.attempts, 1, "no attempt was spent on it");
    }
}
