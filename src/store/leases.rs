//! Claims of a given task and what else is done under a lease: fail, release, block, unblock,
//! and the reaping of expired leases (claim-next, progress and complete, the hot path, are in
//! `cycle`). Every operation is one write transaction taken under the write gate, so a check
//! and the change it guards can never interleave with another.

use std::time::Duration;

use serde_json::json;
use sqlx::SqliteConnection;

use crate::domain::event::NewEvent;
use crate::domain::{Lease, Principal, Route, Status, Task, Timestamp};

use super::rows::{TaskRow, TASK_COLUMNS};
use super::tasks::fetch_existing;
use super::{deps, Store, StoreError, StoreResult, Wake};

/// A successful claim: the task and the caller's lease on it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Claimed {
    /// The task, now in progress.
    pub task: Task,
    /// The lease; keep `fence` for every later call.
    pub lease: Lease,
}

/// What claim-next may hand out.
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    /// The claimer's capabilities: a task's must be a subset.
    pub capabilities: Vec<String>,
    /// Only these projects, if given.
    pub projects: Option<Vec<String>>,
}

pub(super) const CLAIM_SET: &str = "status = 'in_progress', fence = fence + 1, attempts = attempts + 1, \
    lease_holder = ?1, lease_expires_at = ?2, lease_ms = ?3, claimed_at = ?4, updated_at = ?4, \
    last_progress_at = ?4, status_reason = NULL, not_before = 0, stalled_at = NULL";

pub(super) fn claimed(row: TaskRow) -> StoreResult<Claimed> {
    let task = Task::try_from(row)?;
    let lease = task
        .lease
        .clone()
        .ok_or_else(|| StoreError::Corrupt(format!("claimed task #{} has no lease", task.id)))?;
    Ok(Claimed { task, lease })
}

pub(super) fn claim_event(c: &Claimed) -> NewEvent {
    NewEvent::task(
        "task.claimed",
        c.task.id,
        &c.lease.holder,
        json!({"holder": c.lease.holder, "fence": c.lease.fence, "attempt": c.task.attempts,
               "expires_at": c.lease.expires_at}),
    )
}

/// Checks that `who` holds the lease `fence` on `task`.
pub(super) fn check_hold(task: &Task, who: &Principal, fence: i64) -> StoreResult<()> {
    match &task.lease {
        Some(lease) if lease.fence == fence => {
            if who.may_act_for(&lease.holder) {
                Ok(())
            } else {
                Err(StoreError::Forbidden(format!(
                    "task #{} is leased to {}, not to {}",
                    task.id, lease.holder, who.name
                )))
            }
        }
        Some(lease) => Err(StoreError::LeaseLost(format!(
            "fence {fence} on task #{} is stale: the task was claimed again (fence {}); stop work on it",
            task.id, lease.fence
        ))),
        None => Err(StoreError::LeaseLost(format!(
            "fence {fence} on task #{} is stale: the task is now {}; stop work on it",
            task.id, task.status
        ))),
    }
}

/// The backoff before retry number `attempts + 1`: base × 2^(attempts − 1), at most an hour.
fn backoff(base: Duration, attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let ms = (base.as_millis() as i64).saturating_mul(1_i64 << exp);
    ms.min(3_600_000)
}

/// Returns expired leases (all, or only task `only`) to `available`, or to `failed` when
/// their attempts are used up. Returns the events and the tasks that are available again.
async fn reap(
    tx: &mut SqliteConnection,
    now: Timestamp,
    only: Option<i64>,
) -> StoreResult<(Vec<NewEvent>, Vec<i64>)> {
    let expired: Vec<(i64, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT id, lease_holder, fence, attempts, max_attempts FROM tasks \
         WHERE status = 'in_progress' AND lease_expires_at <= ?1 AND (?2 IS NULL OR id = ?2)",
    )
    .bind(now.millis())
    .bind(only)
    .fetch_all(&mut *tx)
    .await?;
    let mut events = Vec::new();
    let mut ready = Vec::new();
    for (id, holder, fence, attempts, max_attempts) in expired {
        let last = attempts >= max_attempts;
        let reason = if last {
            format!("the lease of {holder} expired and all {max_attempts} attempts are used")
        } else {
            format!("the lease of {holder} expired")
        };
        sqlx::query(
            "UPDATE tasks SET status = ?2, status_reason = ?3, lease_holder = NULL, lease_expires_at = NULL, \
             updated_at = ?4 WHERE id = ?1",
        )
        .bind(id)
        .bind(if last { "failed" } else { "available" })
        .bind(&reason)
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        events.push(NewEvent {
            kind: "task.lease_expired",
            task_id: Some(id),
            actor: None,
            data: json!({"holder": holder, "fence": fence, "final": last}),
        });
        if last {
            events.push(NewEvent {
                kind: "task.failed",
                task_id: Some(id),
                actor: None,
                data: json!({"reason": reason, "final": true, "fence": fence}),
            });
            events.extend(deps::block_dependents(tx, id, Status::Failed, now, "lease-reaper").await?);
        } else {
            ready.push(id);
        }
    }
    Ok((events, ready))
}

impl Store {
    fn is_for_people(&self, task: &Task) -> bool {
        task.route == Route::Human
            || (task.route == Route::Auto && self.options.human_kinds.contains(&task.kind))
    }

    /// Claims one given task. An expired lease is taken over at once.
    pub async fn claim_task(&self, id: i64, who: &Principal, lease: Duration) -> StoreResult<Claimed> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let (claim, events, ready) = self.claim_in(&mut tx, id, who, lease, now).await?;
        self.commit(tx, now, events, Wake::tasks(ready)).await?;
        Ok(claim)
    }

    /// [`Store::claim_task`] inside the caller's transaction: the claim, its events, and the
    /// tasks reaping along the way made available again.
    pub(super) async fn claim_in(
        &self,
        tx: &mut SqliteConnection,
        id: i64,
        who: &Principal,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<(Claimed, Vec<NewEvent>, Vec<i64>)> {
        let (mut events, ready) = reap(&mut *tx, now, Some(id)).await?;
        let task = fetch_existing(&mut *tx, id).await?;
        if task.route == Route::Spawn && !who.is_person() && who.kind != "spawned" {
            return Err(StoreError::Forbidden(format!(
                "task #{id} has route spawn: it is for an agent process the server starts"
            )));
        }
        if task.status == Status::Available && task.attempts >= task.max_attempts {
            return Err(StoreError::NotReady(format!(
                "task #{id} has used all {} attempts; raise max_attempts to run it again",
                task.max_attempts
            )));
        }
        if self.is_for_people(&task) && !who.is_person() {
            return Err(StoreError::Forbidden(format!(
                "task #{id} is meant for a person (route {}, kind {}); agents cannot claim it",
                task.route.as_str(),
                task.kind
            )));
        }
        match task.status {
            Status::Available if task.not_before.is_none_or(|t| t <= now) => {}
            Status::Available => {
                return Err(StoreError::NotReady(format!(
                    "task #{id} is backing off after a failed attempt until {}",
                    task.not_before.map(Timestamp::to_rfc3339).unwrap_or_default()
                )))
            }
            Status::InProgress => {
                let holder = task.lease.map(|l| l.holder).unwrap_or_default();
                return Err(StoreError::AlreadyClaimed { holder });
            }
            Status::Pending => {
                return Err(StoreError::NotReady(format!(
                    "task #{id} is waiting for its dependencies; see GET /api/v1/tasks/{id}/why"
                )))
            }
            other => {
                let reason = task.status_reason.map(|r| format!(" ({r})")).unwrap_or_default();
                return Err(StoreError::NotReady(format!("task #{id} is {other}{reason}")));
            }
        }
        let row: TaskRow = sqlx::query_as(&format!(
            "UPDATE tasks SET {CLAIM_SET} WHERE id = ?5 RETURNING {TASK_COLUMNS}"
        ))
        .bind(&who.name)
        .bind(now.plus_millis(lease.as_millis() as i64).millis())
        .bind(lease.as_millis() as i64)
        .bind(now.millis())
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let claim = claimed(row)?;
        events.push(claim_event(&claim));
        Ok((claim, events, ready))
    }

    /// The next moment after `after` at which work may become claimable without anyone acting:
    /// the end of a retry backoff or of a lease. Long polls sleep until then at most; they pass the
    /// time of their last claim attempt, so a backoff ending since then is not missed.
    pub async fn next_timed_wakeup(&self, after: Timestamp) -> StoreResult<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(t) FROM ( \
               SELECT MIN(not_before) AS t FROM tasks WHERE status = 'available' AND not_before > ?1 \
               UNION ALL SELECT MIN(lease_expires_at) FROM tasks WHERE status = 'in_progress')",
        )
        .bind(after.millis())
        .fetch_one(&self.reader)
        .await?;
        Ok(at.map(Timestamp))
    }

    /// The leases `holder` holds now, as (task id, fence).
    pub async fn leases_held_by(&self, holder: &str) -> StoreResult<Vec<(i64, i64)>> {
        Ok(
            sqlx::query_as("SELECT id, fence FROM tasks WHERE status = 'in_progress' AND lease_holder = ?1")
                .bind(holder)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// Returns every expired lease; the lease-reaper loop calls this. Returns how many.
    pub async fn reap_expired_leases(&self) -> StoreResult<usize> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let (events, ready) = reap(&mut tx, now, None).await?;
        let count = events.iter().filter(|e| e.kind == "task.lease_expired").count();
        self.commit(tx, now, events, Wake::tasks(ready)).await?;
        Ok(count)
    }

    /// At startup: shortens every lease that ends more than its own length from now (the
    /// system clock was set back while the server was down), so none outlives its length.
    /// Returns how many were shortened.
    pub async fn bound_leases(&self) -> StoreResult<u64> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE tasks SET lease_expires_at = ?1 + lease_ms \
             WHERE status = 'in_progress' AND lease_expires_at > ?1 + lease_ms",
        )
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit(self).await?;
        Ok(done.rows_affected())
    }

    /// Fails an attempt: back to `available` after a backoff when retryable with attempts left,
    /// otherwise `failed` for good (and its dependents blocked).
    pub async fn fail(
        &self,
        id: i64,
        who: &Principal,
        fence: i64,
        reason: String,
        retryable: bool,
    ) -> StoreResult<Task> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let task = fetch_existing(&mut tx, id).await?;
        check_hold(&task, who, fence)?;
        let retry = retryable && task.attempts < task.max_attempts;
        let holder = task.lease.map(|l| l.holder).unwrap_or_default();
        let mut events = Vec::new();
        let retry_at = if retry {
            let at = now.plus_millis(backoff(self.options.retry_backoff, task.attempts));
            sqlx::query(
                "UPDATE tasks SET status = 'available', status_reason = ?2, not_before = ?3, lease_holder = NULL, \
                 lease_expires_at = NULL, updated_at = ?4 WHERE id = ?1",
            )
            .bind(id)
            .bind(format!("attempt {} failed: {reason}", task.attempts))
            .bind(at.millis())
            .bind(now.millis())
            .execute(&mut *tx)
            .await?;
            Some(at)
        } else {
            let why = if retryable {
                format!("{reason} (all {} attempts used)", task.max_attempts)
            } else {
                reason.clone()
            };
            sqlx::query(
                "UPDATE tasks SET status = 'failed', status_reason = ?2, lease_holder = NULL, lease_expires_at = NULL, \
                 updated_at = ?3 WHERE id = ?1",
            )
            .bind(id)
            .bind(why)
            .bind(now.millis())
            .execute(&mut *tx)
            .await?;
            None
        };
        events.push(NewEvent::task(
            "task.failed",
            id,
            &who.name,
            json!({"holder": holder, "fence": fence, "reason": reason, "final": !retry, "retry_at": retry_at}),
        ));
        if !retry {
            events.extend(deps::block_dependents(&mut tx, id, Status::Failed, now, &who.name).await?);
        }
        let updated = fetch_existing(&mut tx, id).await?;
        // A zero backoff makes the task claimable at once.
        self.commit(
            tx,
            now,
            events,
            Wake::task_if(id, retry_at.is_some_and(|at| at <= now)),
        )
        .await?;
        Ok(updated)
    }

    /// Hands a task back untouched; the attempt is given back too.
    pub async fn release(
        &self,
        id: i64,
        who: &Principal,
        fence: i64,
        note: Option<String>,
    ) -> StoreResult<Task> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let task = fetch_existing(&mut tx, id).await?;
        check_hold(&task, who, fence)?;
        sqlx::query(
            "UPDATE tasks SET status = 'available', status_reason = ?2, attempts = MAX(attempts - 1, 0), \
             lease_holder = NULL, lease_expires_at = NULL, not_before = 0, updated_at = ?3 WHERE id = ?1",
        )
        .bind(id)
        .bind(note.as_ref().map(|n| format!("released: {n}")))
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        let holder = task.lease.map(|l| l.holder).unwrap_or_default();
        let updated = fetch_existing(&mut tx, id).await?;
        self.commit(
            tx,
            now,
            vec![NewEvent::task(
                "task.released",
                id,
                &who.name,
                json!({"holder": holder, "fence": fence, "note": note}),
            )],
            Wake::tasks(vec![id]),
        )
        .await?;
        Ok(updated)
    }

    /// Blocks a task on a decision only a person can make. The holder blocks under its fence;
    /// an admin may also block a task nobody holds. A block gives the attempt back.
    pub async fn block(
        &self,
        id: i64,
        who: &Principal,
        fence: Option<i64>,
        reason: String,
    ) -> StoreResult<Task> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let task = fetch_existing(&mut tx, id).await?;
        match (task.status, fence) {
            (Status::InProgress, Some(fence)) => check_hold(&task, who, fence)?,
            (Status::InProgress, None) => {
                return Err(
                    crate::domain::InputError::new("fence", "required: the task is in progress").into(),
                )
            }
            (_, Some(fence)) => check_hold(&task, who, fence)?,
            (Status::Pending | Status::Available, None) if who.is_admin() => {}
            (Status::Pending | Status::Available, None) => {
                return Err(StoreError::Forbidden(
                    "only an admin may block a task it does not hold".into(),
                ))
            }
            (status, None) => {
                return Err(StoreError::Conflict(format!(
                    "task #{id} is {status}; it cannot be blocked"
                )))
            }
        }
        let holder = task.lease.as_ref().map(|l| l.holder.clone());
        sqlx::query(
            "UPDATE tasks SET status = 'blocked', status_reason = ?2, \
             attempts = CASE WHEN status = 'in_progress' THEN MAX(attempts - 1, 0) ELSE attempts END, \
             lease_holder = NULL, lease_expires_at = NULL, updated_at = ?3 WHERE id = ?1",
        )
        .bind(id)
        .bind(&reason)
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        let updated = fetch_existing(&mut tx, id).await?;
        self.commit(
            tx,
            now,
            vec![NewEvent::task(
                "task.blocked",
                id,
                &who.name,
                json!({"reason": reason, "holder": holder, "fence": fence}),
            )],
            Wake::default(),
        )
        .await?;
        Ok(updated)
    }

    /// Lifts a block (people and admins only): the task waits for its dependencies again or is
    /// available at once. Refused while a dependency is failed or cancelled.
    pub async fn unblock(&self, id: i64, who: &Principal, note: Option<String>) -> StoreResult<Task> {
        if !who.is_person() {
            return Err(StoreError::Forbidden(
                "only a person or an admin may lift a block".into(),
            ));
        }
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let (updated, event) = unblock_in(&mut tx, id, who, note, now).await?;
        let ready = Wake::task_if(id, updated.status == Status::Available);
        self.commit(tx, now, vec![event], ready).await?;
        Ok(updated)
    }
}

/// [`Store::unblock`] inside the caller's transaction: the task after, and the event.
pub(super) async fn unblock_in(
    tx: &mut SqliteConnection,
    id: i64,
    who: &Principal,
    note: Option<String>,
    now: Timestamp,
) -> StoreResult<(Task, NewEvent)> {
    let task = fetch_existing(&mut *tx, id).await?;
    if task.status != Status::Blocked {
        return Err(StoreError::Conflict(format!(
            "task #{id} is {}, not blocked",
            task.status
        )));
    }
    let (status, reason) = deps::initial_status(&mut *tx, &task.depends_on).await?;
    if status == Status::Blocked {
        return Err(StoreError::Conflict(format!(
            "task #{id} cannot run: {}; change its depends_on first",
            reason.unwrap_or_default()
        )));
    }
    sqlx::query(
        "UPDATE tasks SET status = ?2, status_reason = NULL, not_before = 0, updated_at = ?3 WHERE id = ?1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(now.millis())
    .execute(&mut *tx)
    .await?;
    let updated = fetch_existing(&mut *tx, id).await?;
    let event = NewEvent::task(
        "task.unblocked",
        id,
        &who.name,
        json!({"note": note, "status": status}),
    );
    Ok((updated, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1), 30_000);
        assert_eq!(backoff(base, 2), 60_000);
        assert_eq!(backoff(base, 3), 120_000);
        assert_eq!(backoff(base, 50), 3_600_000);
        assert_eq!(backoff(Duration::ZERO, 5), 0);
    }
}
