//! The lease lifecycle on PostgreSQL — every operation that moves a task through its statuses:
//! claim, claim-next, progress, complete, fail, release, block, unblock, cancel, and the return
//! of expired leases. Each runs as one transaction, applies the rules of `domain::lifecycle`,
//! `domain::claim` and `domain::cancel`, and records its events before it commits. Taking work
//! (claim, claim-next, reaping) is in `claim.rs`; holding it and letting it go (progress,
//! complete, fail, release, block, unblock, cancel) is here; claim-nexts and agents'
//! completions that arrive at the same moment share one transaction (`batch.rs`).
//!
//! Other transactions run alongside, so a rule is judged only on rows this one has locked
//! (`lock_task`, `SELECT … FOR UPDATE`), or the write is one statement whose condition is the
//! rule (progress and an agent's completion: `UPDATE … WHERE id AND fence AND holder`). Lease
//! times come from the database's clock (`tx.now`), never the server's.

mod batch;
mod claim;

use std::time::Duration;

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres as Pg, Row};

use crate::domain::cancel::{may_cancel, Unfinished};
use crate::domain::input::{CompleteSpec, ProgressSpec};
use crate::domain::lifecycle::{check_block, check_hold, check_unblock, failing, waiting_on};
use crate::domain::{BlockedBy, Change, NewEvent, Principal, Refused, Status, Task, Timestamp};
use crate::store::{ClaimFilter, Claimed, Leases, StoreError, StoreResult};

use super::deps::Dependents;
use super::rows::{self, to_json, TASK_COLUMNS, TASK_COLUMN_COUNT};
use super::tx::Tx;
use super::{deps, fetch_task, lock_task, reservations, Postgres};
use crate::store::announce::Announce;
use crate::store::announce::Count;

pub(super) use batch::Batcher;
use claim::claim_next_in;
pub(super) use claim::{check_active, claim_in, reap};

/// The task and its descendants, as a recursive CTE named `tree(id)` over `$1`.
const SUBTREE: &str = "WITH RECURSIVE tree(id) AS (SELECT $1::bigint UNION \
     SELECT t.id FROM tasks t JOIN tree ON t.parent_id = tree.id)";

/// `d` in whole milliseconds (saturating).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs `query`, an `UPDATE` of one task `RETURNING` [`TASK_COLUMNS`]: the task as changed, or
/// `None` when no row matched.
async fn update_task(tx: &mut Tx, query: Query<'_, Pg, PgArguments>) -> StoreResult<Option<Task>> {
    query
        .fetch_optional(tx.db())
        .await?
        .map(|row| rows::task(&row))
        .transpose()
}

/// Lifts the block on task `id` inside the caller's change; returns the task after. The task
/// is locked, and its dependencies share-locked, while it is judged.
pub(super) async fn unblock_in(
    tx: &mut Tx,
    id: i64,
    who: &Principal,
    note: Option<String>,
) -> StoreResult<Task> {
    let task = lock_task(tx.db(), id).await?;
    check_unblock(&task, who)?;
    let (status, reason) = waiting_on(&deps::statuses(tx.db(), &task.depends_on).await?);
    if status == Status::Blocked {
        return Err(StoreError::conflict(format!(
            "task #{id} cannot run: {}; change its depends_on first",
            reason.unwrap_or_default()
        )));
    }
    let now = tx.now;
    let sql = format!(
        "UPDATE tasks SET status = $2, status_reason = NULL, not_before = 0, updated_at = $3 \
         WHERE id = $1 RETURNING {TASK_COLUMNS}"
    );
    let updated = update_task(
        tx,
        sqlx::query(&sql)
            .bind(id)
            .bind(status.as_str())
            .bind(now.millis()),
    )
    .await?
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

/// Hands back `task`, whose row the caller locked and whose lease it checked, to `available`
/// inside the caller's change, the attempt given back too; `actor` did it.
async fn release_in(tx: &mut Tx, task: Task, actor: &str, note: Option<String>) -> StoreResult<Task> {
    let (id, now) = (task.id, tx.now);
    let sql = format!(
        "UPDATE tasks SET status = 'available', status_reason = $2::text, \
             attempts = GREATEST(attempts - 1, 0), lease_holder = NULL, lease_expires_at = NULL, \
             not_before = 0, updated_at = $3 \
         WHERE id = $1 RETURNING {TASK_COLUMNS}"
    );
    let reason = note.as_ref().map(|n| format!("released: {n}"));
    let updated = update_task(tx, sqlx::query(&sql).bind(id).bind(reason).bind(now.millis()))
        .await?
        .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
    reservations::end_all(tx, id, Some(actor), "released").await?;
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
/// each with a `task.released` event by `actor`; returns the tasks. Their rows are locked in id
/// order first.
pub(in crate::store::postgres) async fn release_all_held_by(
    tx: &mut Tx,
    holder: &str,
    actor: &str,
    note: &str,
) -> StoreResult<Vec<i64>> {
    let held = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'in_progress' AND lease_holder = $1 \
         ORDER BY id FOR UPDATE"
    ))
    .bind(holder)
    .fetch_all(tx.db())
    .await?
    .iter()
    .map(rows::task)
    .collect::<StoreResult<Vec<_>>>()?;
    let mut ids = Vec::with_capacity(held.len());
    for task in held {
        ids.push(task.id);
        release_in(tx, task, actor, Some(note.to_string())).await?;
    }
    Ok(ids)
}

/// A completion's row just changed, as what follows it needs it: the lease it ended, the
/// summary, and whether the lease held reservations and other tasks depend on the task (both
/// come back with the row, so the usual completion, neither, takes no further statement).
struct Completion {
    holder: String,
    fence: i64,
    summary: String,
    reserved: bool,
    depended_on: bool,
}

impl Completion {
    /// Records completion of `task` (changed already) by `who` inside the caller's change: its
    /// reservations end, its event, its dependents that can now run, the count.
    async fn record(self, tx: &mut Tx, task: &Task, who: &Principal) -> StoreResult<()> {
        if self.reserved && self.depended_on {
            deps::lock_dependents(tx, &[task.id], Dependents::Release).await?;
        }
        if self.reserved {
            reservations::end_all(tx, task.id, Some(&who.name), "completed").await?;
        }
        tx.event(NewEvent::task(
            task.id,
            &who.name,
            Change::TaskCompleted {
                holder: self.holder,
                fence: self.fence,
                summary: self.summary,
            },
        ));
        if self.depended_on {
            deps::release_dependents(tx, task.id, &who.name).await?;
        }
        tx.count(Count::Completion, &task.project);
        Ok(())
    }
}

/// The refusal for a fenced write that matched no row: the task as it stands says why.
async fn lease_refusal(tx: &mut Tx, id: i64, who: &Principal, fence: i64) -> StoreError {
    match fetch_task(tx.db(), id).await {
        Ok(task) => match check_hold(&task, who, fence) {
            Err(refused) => refused.into(),
            Ok(()) => StoreError::conflict(format!("task #{id} changed meanwhile; try again")),
        },
        Err(err) => err,
    }
}

impl Postgres {
    /// Claim-next in a change of its own.
    async fn claim_next_alone(
        &self,
        who: &Principal,
        filter: &ClaimFilter,
        lease: Duration,
    ) -> StoreResult<Option<Claimed>> {
        let mut tx = self.begin().await?;
        let claim = claim_next_in(&mut tx, who, filter, lease, &self.options.human_kinds).await?;
        self.commit(tx, claim).await
    }

    /// A completion in a change of its own.
    async fn complete_alone(&self, id: i64, who: &Principal, spec: CompleteSpec) -> StoreResult<Task> {
        let mut tx = self.begin().await?;
        // An admin may complete anyone's lease: who held it is read first (its row locked).
        // Agents complete their own, so one statement both checks and changes.
        let holder = if who.is_admin() {
            let task = lock_task(tx.db(), id).await?;
            check_hold(&task, who, spec.fence)?;
            task.lease.map(|l| l.holder).unwrap_or_default()
        } else {
            who.name.clone()
        };
        let result = spec.result();
        let now = tx.now;
        let sql = format!(
            "UPDATE tasks SET status = 'completed', status_reason = NULL, result = $2, \
                 progress_percent = 100, lease_holder = NULL, lease_expires_at = NULL, \
                 completed_at = $3, updated_at = $3 \
             WHERE id = $1 AND status = 'in_progress' AND fence = $4 AND lease_holder = $5 \
             RETURNING {TASK_COLUMNS}, \
                 EXISTS (SELECT 1 FROM reservations WHERE task_id = $1), \
                 EXISTS (SELECT 1 FROM task_deps WHERE depends_on_id = $1)"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(to_json(&result))
            .bind(now.millis())
            .bind(spec.fence)
            .bind(&holder)
            .fetch_optional(tx.db())
            .await?;
        let Some(row) = row else {
            return Err(lease_refusal(&mut tx, id, who, spec.fence).await);
        };
        let updated = rows::task(&row)?;
        let (reserved, depended_on) = (
            row.try_get(TASK_COLUMN_COUNT)?,
            row.try_get(TASK_COLUMN_COUNT + 1)?,
        );
        let done = Completion {
            holder,
            fence: spec.fence,
            summary: result.summary,
            reserved,
            depended_on,
        };
        done.record(&mut tx, &updated, who).await?;
        self.commit(tx, updated).await
    }
}

#[async_trait::async_trait]
impl Leases for Postgres {
    async fn claim_task(&self, id: i64, who: &Principal, lease: Duration) -> StoreResult<Claimed> {
        let mut tx = self.begin().await?;
        let claim = claim_in(&mut tx, id, who, lease, &self.options.human_kinds).await?;
        self.commit(tx, claim).await
    }

    async fn claim_next(
        &self,
        who: &Principal,
        filter: &ClaimFilter,
        lease: Duration,
    ) -> StoreResult<Option<Claimed>> {
        self.bus.claim_attempted();
        match self.batcher.get() {
            Some(batcher) => batcher.claim_next(who.clone(), filter.clone(), lease).await,
            None => self.claim_next_alone(who, filter, lease).await,
        }
    }

    async fn report_progress(&self, id: i64, who: &Principal, spec: ProgressSpec) -> StoreResult<Task> {
        let mut tx = self.begin().await?;
        // A bare heartbeat renews the lease but is not progress: the stall detector still
        // sees silence, and it is not worth an event.
        let reported = spec.percent.is_some() || spec.note.is_some();
        let lease_ms = spec
            .lease_seconds
            .map(|s| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000));
        let now = tx.now;
        // One statement checks the lease and renews it.
        let sql = format!(
            "UPDATE tasks SET progress_percent = COALESCE($2::bigint, progress_percent), \
                 progress_note = COALESCE($3::text, progress_note), updated_at = $4, \
                 last_progress_at = CASE WHEN $6::boolean THEN $4 ELSE last_progress_at END, \
                 stalled_at = CASE WHEN $6::boolean THEN NULL ELSE stalled_at END, \
                 lease_ms = COALESCE($5::bigint, lease_ms), \
                 lease_expires_at = $4 + COALESCE($5::bigint, lease_ms) \
             WHERE id = $1 AND status = 'in_progress' AND fence = $7 \
                 AND ($8::boolean OR lease_holder = $9) \
             RETURNING {TASK_COLUMNS}"
        );
        let query = sqlx::query(&sql)
            .bind(id)
            .bind(spec.percent)
            .bind(spec.note.clone())
            .bind(now.millis())
            .bind(lease_ms)
            .bind(reported)
            .bind(spec.fence)
            .bind(who.is_admin())
            .bind(&who.name);
        let Some(updated) = update_task(&mut tx, query).await? else {
            return Err(lease_refusal(&mut tx, id, who, spec.fence).await);
        };
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
        self.commit(tx, updated).await
    }

    async fn complete(&self, id: i64, who: &Principal, spec: CompleteSpec) -> StoreResult<Task> {
        // An admin may complete anyone's lease, which is read first; an agent's completion of
        // its own joins others arriving at the same moment.
        match (who.is_admin(), self.batcher.get()) {
            (false, Some(batcher)) => batcher.complete(id, who.clone(), spec).await,
            _ => self.complete_alone(id, who, spec).await,
        }
    }

    async fn fail(
        &self,
        id: i64,
        who: &Principal,
        fence: i64,
        reason: String,
        retryable: bool,
    ) -> StoreResult<Task> {
        let mut tx = self.begin().await?;
        let task = lock_task(tx.db(), id).await?;
        check_hold(&task, who, fence)?;
        let now = tx.now;
        let outcome = failing(&task, &reason, retryable, self.options.retry_backoff, now);
        let sql = format!(
            "UPDATE tasks SET status = $2, status_reason = $3, not_before = $4, lease_holder = NULL, \
                 lease_expires_at = NULL, updated_at = $5 \
             WHERE id = $1 RETURNING {TASK_COLUMNS}"
        );
        let query = sqlx::query(&sql)
            .bind(id)
            .bind(if outcome.retry_at.is_some() {
                "available"
            } else {
                "failed"
            })
            .bind(&outcome.status_reason)
            .bind(outcome.retry_at.map_or(0, Timestamp::millis))
            .bind(now.millis());
        let updated = update_task(&mut tx, query)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
        if outcome.retry_at.is_none() {
            deps::lock_dependents(&mut tx, &[id], Dependents::Block).await?;
        }
        reservations::end_all(&mut tx, id, Some(&who.name), "failed").await?;
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
            None => deps::block_dependents(&mut tx, id, Status::Failed, &who.name).await?,
            // A zero backoff makes the task claimable at once.
            Some(at) if at <= now => tx.ready(id),
            Some(_) => {}
        }
        tx.count(Count::Failure, &updated.project);
        self.commit(tx, updated).await
    }

    async fn release(&self, id: i64, who: &Principal, fence: i64, note: Option<String>) -> StoreResult<Task> {
        let mut tx = self.begin().await?;
        let task = lock_task(tx.db(), id).await?;
        check_hold(&task, who, fence)?;
        let released = release_in(&mut tx, task, &who.name, note).await?;
        self.commit(tx, released).await
    }

    async fn block(&self, id: i64, who: &Principal, fence: Option<i64>, reason: String) -> StoreResult<Task> {
        let mut tx = self.begin().await?;
        let task = lock_task(tx.db(), id).await?;
        check_block(&task, who, fence)?;
        let now = tx.now;
        let sql = format!(
            "UPDATE tasks SET status = 'blocked', status_reason = $2, \
                 attempts = CASE WHEN status = 'in_progress' THEN GREATEST(attempts - 1, 0) ELSE attempts END, \
                 lease_holder = NULL, lease_expires_at = NULL, updated_at = $3 \
             WHERE id = $1 RETURNING {TASK_COLUMNS}"
        );
        let query = sqlx::query(&sql).bind(id).bind(&reason).bind(now.millis());
        let updated = update_task(&mut tx, query)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
        reservations::end_all(&mut tx, id, Some(&who.name), "blocked").await?;
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
        self.commit(tx, updated).await
    }

    async fn unblock(&self, id: i64, who: &Principal, note: Option<String>) -> StoreResult<Task> {
        if !who.is_person() {
            return Err(Refused::Forbidden("only a person or an admin may lift a block".into()).into());
        }
        let mut tx = self.begin().await?;
        let task = unblock_in(&mut tx, id, who, note).await?;
        self.commit(tx, task).await
    }

    async fn cancel_task(&self, id: i64, actor: &Principal, note: Option<String>) -> StoreResult<Task> {
        let mut tx = self.begin().await?;
        let task = lock_task(tx.db(), id).await?;
        let now = tx.now;
        // The unfinished subtree is locked (in id order) before the rule judges who holds it.
        let unfinished = sqlx::query(&format!(
            "{SUBTREE} SELECT id, created_by, CASE WHEN lease_expires_at > $2 THEN lease_holder END \
             FROM tasks WHERE id IN (SELECT id FROM tree) \
                 AND status NOT IN ('completed', 'failed', 'cancelled') \
             ORDER BY id FOR UPDATE OF tasks"
        ))
        .bind(id)
        .bind(now.millis())
        .fetch_all(tx.db())
        .await?
        .iter()
        .map(|row| {
            Ok(Unfinished {
                id: row.try_get(0)?,
                created_by: row.try_get(1)?,
                holder: row.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        may_cancel(actor, id, &unfinished).map_err(StoreError::forbidden)?;
        if task.status.is_final() {
            return Err(StoreError::conflict(format!(
                "task #{id} is already {}",
                task.status
            )));
        }
        // Exactly the tasks locked and judged above: a subtask filed meanwhile was not judged.
        let judged: Vec<i64> = unfinished.iter().map(|u| u.id).collect();
        let mut cancelled: Vec<i64> = sqlx::query_scalar(
            "UPDATE tasks SET status = 'cancelled', status_reason = $2, lease_holder = NULL, \
                 lease_expires_at = NULL, updated_at = $3, completed_at = $3 \
             WHERE id = ANY($1) AND status NOT IN ('completed', 'failed', 'cancelled') \
             RETURNING id",
        )
        .bind(&judged)
        .bind(
            note.clone()
                .unwrap_or_else(|| format!("cancelled by {}", actor.name)),
        )
        .bind(now.millis())
        .fetch_all(tx.db())
        .await?;
        cancelled.sort_unstable();
        deps::lock_dependents(&mut tx, &cancelled, Dependents::Block).await?;
        for cid in &cancelled {
            reservations::end_all(&mut tx, *cid, Some(&actor.name), "cancelled").await?;
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
            deps::block_dependents(&mut tx, *cid, Status::Cancelled, &actor.name).await?;
        }
        let task = fetch_task(tx.db(), id).await?;
        self.commit(tx, task).await
    }

    async fn reap_expired_leases(&self) -> StoreResult<usize> {
        let mut tx = self.begin().await?;
        let reaped = reap(&mut tx, None).await?;
        self.commit(tx, reaped).await
    }

    async fn next_timed_wakeup(&self, after: Timestamp) -> StoreResult<Option<Timestamp>> {
        // Backoffs and leases end on the database's clock; the caller counts on the server's.
        // `after` is moved onto the database's clock and the answer back onto the server's.
        let server_now = Timestamp::now().millis();
        let (at, db_now): (Option<i64>, i64) = sqlx::query_as(
            "SELECT MIN(t), taskyard_now_ms() FROM ( \
               SELECT MIN(not_before) AS t FROM tasks WHERE status = 'available' \
                   AND not_before > $1 - $2 + taskyard_now_ms() \
               UNION ALL SELECT MIN(lease_expires_at) FROM tasks WHERE status = 'in_progress') AS due",
        )
        .bind(after.millis())
        .bind(server_now)
        .fetch_one(&self.pool)
        .await?;
        Ok(at.map(|at| Timestamp(at - db_now + server_now)))
    }

    async fn leases_held_by(&self, holder: &str) -> StoreResult<Vec<(i64, i64)>> {
        Ok(
            sqlx::query_as("SELECT id, fence FROM tasks WHERE status = 'in_progress' AND lease_holder = $1")
                .bind(holder)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn bound_leases(&self) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let now = tx.now;
        let bounded = sqlx::query(
            "UPDATE tasks SET lease_expires_at = $1 + lease_ms \
             WHERE status = 'in_progress' AND lease_expires_at > $1 + lease_ms",
        )
        .bind(now.millis())
        .execute(tx.db())
        .await?
        .rows_affected();
        self.commit(tx, bounded).await
    }
}
