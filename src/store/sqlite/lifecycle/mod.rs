//! The lease lifecycle on SQLite — every operation that moves a task through its statuses:
//! claim, claim-next, progress, complete, fail, release, block, unblock, cancel, and the return
//! of expired leases. Each runs as one change on the writer (group commit), applies the rules
//! of `domain::lifecycle`, `domain::claim` and `domain::cancel`, and records its events in the
//! same savepoint. Taking work (claim, claim-next, reaping) is in `claim.rs`; holding it and
//! letting it go (progress, complete, fail, release, block, unblock, cancel) is here.

mod claim;

use std::time::Duration;

use rusqlite::params;

use crate::domain::cancel::{may_cancel, Unfinished};
use crate::domain::input::{CompleteSpec, ProgressSpec};
use crate::domain::lifecycle::{check_block, check_hold, check_unblock, failing, waiting_on};
use crate::domain::{BlockedBy, Change, NewEvent, Principal, Refused, Status, Task, Timestamp};
use crate::store::{ClaimFilter, Claimed, Leases, StoreError, StoreResult};

use super::engine::Tx;
use super::rows::to_json;
use super::{deps, fetch_task, find_task, reservations, Sqlite};
use crate::store::announce::Announce;
use crate::store::announce::Count;

pub(super) use claim::claim_in;
use claim::claim_next_in;
pub(super) use claim::reap;

/// The task and its descendants, as a recursive CTE named `tree(id)` over `?1`.
const SUBTREE: &str =
    "WITH RECURSIVE tree(id) AS (SELECT ?1 UNION SELECT t.id FROM tasks t JOIN tree ON t.parent_id = tree.id)";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `sql`, an `UPDATE` of task `id` alone, run with `params`: the task as changed, or `None` when
/// no row matched. The row is read back by id rather than with `RETURNING`, for which SQLite
/// builds and drops a temporary table on every call.
fn update_task(tx: &Tx<'_>, id: i64, sql: &str, params: impl rusqlite::Params) -> StoreResult<Option<Task>> {
    match tx.prepare_cached(sql)?.execute(params)? {
        0 => Ok(None),
        _ => find_task(tx, id),
    }
}

/// Lifts the block on task `id` inside the caller's change; returns the task after.
pub(super) fn unblock_in(
    tx: &mut Tx<'_>,
    id: i64,
    who: &Principal,
    note: Option<String>,
) -> StoreResult<Task> {
    let task = fetch_task(tx, id)?;
    check_unblock(&task, who)?;
    let (status, reason) = waiting_on(&deps::statuses(tx, &task.depends_on)?);
    if status == Status::Blocked {
        return Err(StoreError::conflict(format!(
            "task #{id} cannot run: {}; change its depends_on first",
            reason.unwrap_or_default()
        )));
    }
    let now = tx.now;
    let updated = update_task(
        tx,
        id,
        "UPDATE tasks SET status = ?2, status_reason = NULL, not_before = 0, updated_at = ?3 \
             WHERE id = ?1",
        params![id, status.as_str(), now.millis()],
    )?
    .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
    tx.event(NewEvent::task(
        id,
        &who.name,
        Change::TaskUnblocked { note, status },
    ));
    if status == Status::Available {
        tx.ready(id);
    }
    Ok(updated)
}

/// Hands back `task`, whose lease was checked, to `available` inside the caller's change, the
/// attempt given back too; `actor` did it.
fn release_in(tx: &mut Tx<'_>, task: Task, actor: &str, note: Option<String>) -> StoreResult<Task> {
    let (id, now) = (task.id, tx.now);
    let updated = update_task(
        tx,
        id,
        "UPDATE tasks SET status = 'available', status_reason = ?2, attempts = MAX(attempts - 1, 0), \
             lease_holder = NULL, lease_expires_at = NULL, not_before = 0, updated_at = ?3 \
             WHERE id = ?1",
        params![id, note.as_ref().map(|n| format!("released: {n}")), now.millis()],
    )?
    .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
    reservations::end_all(tx, id, Some(actor), "released")?;
    let lease = task.lease.as_ref();
    tx.event(NewEvent::task(
        id,
        actor,
        Change::TaskReleased {
            holder: lease.map(|l| l.holder.clone()).unwrap_or_default(),
            fence: lease.map_or(0, |l| l.fence),
            note,
        },
    ));
    tx.ready(id);
    Ok(updated)
}

/// Releases every lease `holder` holds inside the caller's change (its agent was deactivated),
/// each with a `task.released` event by `actor`; returns the tasks.
pub(in crate::store::sqlite) fn release_all_held_by(
    tx: &mut Tx<'_>,
    holder: &str,
    actor: &str,
    note: &str,
) -> StoreResult<Vec<i64>> {
    let ids = tx
        .prepare_cached(
            "SELECT id FROM tasks WHERE status = 'in_progress' AND lease_holder = ?1 ORDER BY id",
        )?
        .query_map([holder], |row| row.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for &id in &ids {
        let task = fetch_task(tx, id)?;
        release_in(tx, task, actor, Some(note.to_string()))?;
    }
    Ok(ids)
}

/// The refusal for a fenced write that matched no row: the task as it stands says why.
fn lease_refusal(tx: &Tx<'_>, id: i64, who: &Principal, fence: i64) -> StoreError {
    match fetch_task(tx, id) {
        Ok(task) => match check_hold(&task, who, fence) {
            Err(refused) => refused.into(),
            Ok(()) => StoreError::conflict(format!("task #{id} changed meanwhile; try again")),
        },
        Err(err) => err,
    }
}

#[async_trait::async_trait]
impl Leases for Sqlite {
    async fn claim_task(&self, id: i64, who: &Principal, lease: Duration) -> StoreResult<Claimed> {
        let (who, kinds) = (who.clone(), self.options.human_kinds.clone());
        self.write(move |tx| claim_in(tx, id, &who, lease, &kinds)).await
    }

    async fn claim_next(
        &self,
        who: &Principal,
        filter: &ClaimFilter,
        lease: Duration,
    ) -> StoreResult<Option<Claimed>> {
        self.shared.bus.claim_attempted();
        let (who, filter, kinds) = (who.clone(), filter.clone(), self.options.human_kinds.clone());
        self.write(move |tx| claim_next_in(tx, &who, &filter, lease, &kinds))
            .await
    }

    async fn report_progress(&self, id: i64, who: &Principal, spec: ProgressSpec) -> StoreResult<Task> {
        let who = who.clone();
        self.write(move |tx| {
            // A bare heartbeat renews the lease but is not progress: the stall detector still
            // sees silence, and it is not worth an event.
            let reported = spec.percent.is_some() || spec.note.is_some();
            let lease_ms = spec.lease_seconds.map(|s| s as i64 * 1000);
            let now = tx.now;
            let updated = update_task(
                tx,
                id,
                "UPDATE tasks SET progress_percent = COALESCE(?2, progress_percent), \
                     progress_note = COALESCE(?3, progress_note), updated_at = ?4, \
                     last_progress_at = CASE WHEN ?6 THEN ?4 ELSE last_progress_at END, \
                     stalled_at = CASE WHEN ?6 THEN NULL ELSE stalled_at END, \
                     lease_ms = COALESCE(?5, lease_ms), lease_expires_at = ?4 + COALESCE(?5, lease_ms) \
                     WHERE id = ?1 AND status = 'in_progress' AND fence = ?7 AND (?8 OR lease_holder = ?9) \
                    ",
                params![
                    id,
                    spec.percent,
                    spec.note,
                    now.millis(),
                    lease_ms,
                    reported,
                    spec.fence,
                    who.is_admin(),
                    who.name
                ],
            )?
            .ok_or_else(|| lease_refusal(tx, id, &who, spec.fence))?;
            if reported {
                tx.event(NewEvent::task(
                    id,
                    &who.name,
                    Change::TaskProgress {
                        percent: updated.progress.percent,
                        note: spec.note,
                        fence: spec.fence,
                    },
                ));
            }
            Ok(updated)
        })
        .await
    }

    async fn complete(&self, id: i64, who: &Principal, spec: CompleteSpec) -> StoreResult<Task> {
        let who = who.clone();
        self.write(move |tx| {
            // An admin may complete anyone's lease: who held it is read first. Agents complete
            // their own, so one statement both checks and changes.
            let holder = if who.is_admin() {
                let task = fetch_task(tx, id)?;
                check_hold(&task, &who, spec.fence)?;
                task.lease.map(|l| l.holder).unwrap_or_default()
            } else {
                who.name.clone()
            };
            let result = spec.result();
            let now = tx.now;
            let updated = update_task(
                tx,
                id,
                "UPDATE tasks SET status = 'completed', status_reason = NULL, result = ?2, \
                     progress_percent = 100, lease_holder = NULL, lease_expires_at = NULL, \
                     completed_at = ?3, updated_at = ?3 \
                     WHERE id = ?1 AND status = 'in_progress' AND fence = ?4 AND lease_holder = ?5 \
                    ",
                params![id, to_json(&result), now.millis(), spec.fence, holder],
            )?
            .ok_or_else(|| lease_refusal(tx, id, &who, spec.fence))?;
            reservations::end_all(tx, id, Some(&who.name), "completed")?;
            tx.event(NewEvent::task(
                id,
                &who.name,
                Change::TaskCompleted {
                    holder,
                    fence: spec.fence,
                    summary: result.summary,
                },
            ));
            deps::release_dependents(tx, id, &who.name)?;
            tx.count(Count::Completion, &updated.project);
            Ok(updated)
        })
        .await
    }

    async fn fail(
        &self,
        id: i64,
        who: &Principal,
        fence: i64,
        reason: String,
        retryable: bool,
    ) -> StoreResult<Task> {
        let (who, base) = (who.clone(), self.options.retry_backoff);
        self.write(move |tx| {
            let task = fetch_task(tx, id)?;
            check_hold(&task, &who, fence)?;
            let outcome = failing(&task, &reason, retryable, base, tx.now);
            let now = tx.now;
            let updated = update_task(
                tx,
                id,
                "UPDATE tasks SET status = ?2, status_reason = ?3, not_before = ?4, lease_holder = NULL, \
                     lease_expires_at = NULL, updated_at = ?5 WHERE id = ?1",
                params![
                    id,
                    if outcome.retry_at.is_some() {
                        "available"
                    } else {
                        "failed"
                    },
                    outcome.status_reason,
                    outcome.retry_at.map_or(0, Timestamp::millis),
                    now.millis()
                ],
            )?
            .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
            reservations::end_all(tx, id, Some(&who.name), "failed")?;
            tx.event(NewEvent::task(
                id,
                &who.name,
                Change::TaskFailed {
                    holder: task.lease.map(|l| l.holder),
                    fence,
                    reason,
                    last: outcome.retry_at.is_none(),
                    retry_at: outcome.retry_at,
                },
            ));
            match outcome.retry_at {
                None => deps::block_dependents(tx, id, Status::Failed, &who.name)?,
                // A zero backoff makes the task claimable at once.
                Some(at) if at <= now => tx.ready(id),
                Some(_) => {}
            }
            tx.count(Count::Failure, &updated.project);
            Ok(updated)
        })
        .await
    }

    async fn release(&self, id: i64, who: &Principal, fence: i64, note: Option<String>) -> StoreResult<Task> {
        let who = who.clone();
        self.write(move |tx| {
            let task = fetch_task(tx, id)?;
            check_hold(&task, &who, fence)?;
            release_in(tx, task, &who.name, note)
        })
        .await
    }

    async fn block(&self, id: i64, who: &Principal, fence: Option<i64>, reason: String) -> StoreResult<Task> {
        let who = who.clone();
        self.write(move |tx| {
            let task = fetch_task(tx, id)?;
            check_block(&task, &who, fence)?;
            let now = tx.now;
            let updated = update_task(
                tx,
                id,
                "UPDATE tasks SET status = 'blocked', status_reason = ?2, \
                     attempts = CASE WHEN status = 'in_progress' THEN MAX(attempts - 1, 0) ELSE attempts END, \
                     lease_holder = NULL, lease_expires_at = NULL, updated_at = ?3 \
                     WHERE id = ?1",
                params![id, reason, now.millis()],
            )?
            .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
            reservations::end_all(tx, id, Some(&who.name), "blocked")?;
            tx.event(NewEvent::task(
                id,
                &who.name,
                Change::TaskBlocked {
                    reason,
                    by: BlockedBy::Decision {
                        holder: task.lease.map(|l| l.holder),
                        fence,
                    },
                },
            ));
            Ok(updated)
        })
        .await
    }

    async fn unblock(&self, id: i64, who: &Principal, note: Option<String>) -> StoreResult<Task> {
        if !who.is_person() {
            return Err(Refused::Forbidden("only a person or an admin may lift a block".into()).into());
        }
        let who = who.clone();
        self.write(move |tx| unblock_in(tx, id, &who, note)).await
    }

    async fn cancel_task(&self, id: i64, actor: &Principal, note: Option<String>) -> StoreResult<Task> {
        let actor = actor.clone();
        self.write(move |tx| {
            let task = fetch_task(tx, id)?;
            let now = tx.now;
            let unfinished = tx
                .prepare_cached(&format!(
                    "{SUBTREE} SELECT id, created_by, CASE WHEN lease_expires_at > ?2 THEN lease_holder END \
                     FROM tasks WHERE id IN (SELECT id FROM tree) \
                         AND status NOT IN ('completed', 'failed', 'cancelled') ORDER BY id"
                ))?
                .query_map(params![id, now.millis()], |row| {
                    Ok(Unfinished {
                        id: row.get(0)?,
                        created_by: row.get(1)?,
                        holder: row.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            may_cancel(&actor, id, &unfinished).map_err(StoreError::forbidden)?;
            if task.status.is_final() {
                return Err(StoreError::conflict(format!("task #{id} is already {}", task.status)));
            }
            let cancelled = tx
                .prepare_cached(&format!(
                    "{SUBTREE} UPDATE tasks SET status = 'cancelled', status_reason = ?2, lease_holder = NULL, \
                         lease_expires_at = NULL, updated_at = ?3, completed_at = ?3 \
                     WHERE id IN (SELECT id FROM tree) AND status NOT IN ('completed', 'failed', 'cancelled') \
                     RETURNING id"
                ))?
                .query_map(
                    params![
                        id,
                        note.clone().unwrap_or_else(|| format!("cancelled by {}", actor.name)),
                        now.millis()
                    ],
                    |row| row.get::<_, i64>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            for cid in &cancelled {
                reservations::end_all(tx, *cid, Some(&actor.name), "cancelled")?;
                tx.event(NewEvent::task(
                    *cid,
                    &actor.name,
                    Change::TaskCancelled {
                        note: note.clone(),
                        via_parent: (*cid != id).then_some(id),
                    },
                ));
            }
            for cid in &cancelled {
                deps::block_dependents(tx, *cid, Status::Cancelled, &actor.name)?;
            }
            fetch_task(tx, id)
        })
        .await
    }

    async fn reap_expired_leases(&self) -> StoreResult<usize> {
        self.write(|tx| reap(tx, None)).await
    }

    async fn next_timed_wakeup(&self, after: Timestamp) -> StoreResult<Option<Timestamp>> {
        self.read(move |conn| {
            let at: Option<i64> = conn
                .prepare_cached(
                    "SELECT MIN(t) FROM ( \
                       SELECT MIN(not_before) AS t FROM tasks WHERE status = 'available' AND not_before > ?1 \
                       UNION ALL SELECT MIN(lease_expires_at) FROM tasks WHERE status = 'in_progress')",
                )?
                .query_row([after.millis()], |row| row.get(0))?;
            Ok(at.map(Timestamp))
        })
        .await
    }

    async fn leases_held_by(&self, holder: &str) -> StoreResult<Vec<(i64, i64)>> {
        let holder = holder.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, fence FROM tasks WHERE status = 'in_progress' AND lease_holder = ?1",
                )?
                .query_map([holder], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn bound_leases(&self) -> StoreResult<u64> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE tasks SET lease_expires_at = ?1 + lease_ms \
                 WHERE status = 'in_progress' AND lease_expires_at > ?1 + lease_ms",
                [tx.now.millis()],
            )? as u64)
        })
        .await
    }
}
