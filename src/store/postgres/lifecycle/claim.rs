//! Taking work on PostgreSQL: claim by id, claim-next's query and claim, and the return of
//! expired leases that both do first (to `available`, or `failed` when attempts are used up).
//!
//! Many transactions claim at once. A claim by id locks the task's row before judging it.
//! Claim-next picks the best ready task and claims it in one statement, passing over rows
//! other transactions hold (`FOR UPDATE SKIP LOCKED`), so concurrent claimers never wait on
//! each other nor take the same task. Expired leases are returned with their rows locked in id
//! order.

use std::time::Duration;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres as Pg, Row};

use crate::domain::lifecycle::{check_claim, expiring};
use crate::domain::{Change, NewEvent, Principal, Status, Task};
use crate::store::{ClaimFilter, Claimed, StoreError, StoreResult};

use super::super::deps::Dependents;
use super::super::rows::{self, json, TASK_COLUMNS};
use super::super::tx::Tx;
use super::super::{deps, fetch_task, lock_task, reservations};
use super::millis;
use crate::store::announce::Announce;
use crate::store::announce::Count;

/// What a claim sets: `$1` is now; the holder, lease end and lease length are the given
/// expressions.
pub(super) fn claim_set(holder: &str, until: &str, length: &str) -> String {
    format!(
        "status = 'in_progress', fence = fence + 1, attempts = attempts + 1, \
         lease_holder = {holder}, lease_expires_at = {until}, lease_ms = {length}, claimed_at = $1, \
         updated_at = $1, last_progress_at = $1, status_reason = NULL, not_before = 0, stalled_at = NULL"
    )
}

/// A claim's [`claim_set`] from the parameters `$2` holder, `$3` lease end, `$4` lease length.
fn claim_set_one() -> String {
    claim_set("$2", "$3", "$4")
}

/// What claim-next must see to before it claims (`$1` is now): whether leases expired, whether
/// paths are reserved, and whether ready tasks declare paths.
pub(super) const SITUATION: &str =
    "EXISTS (SELECT 1 FROM tasks WHERE status = 'in_progress' AND lease_expires_at <= $1), \
     EXISTS (SELECT 1 FROM reservations), \
     EXISTS (SELECT 1 FROM tasks WHERE status = 'available' AND paths <> '[]')";

/// How many ready tasks claim-next reads at a time while it passes over those whose declared
/// paths are reserved.
const SCAN_BATCH: i64 = 64;

/// The claim a row just changed to in progress stands for.
pub(super) fn claimed(task: Task) -> StoreResult<Claimed> {
    let lease = task
        .lease
        .clone()
        .ok_or_else(|| StoreError::Corrupt(format!("claimed task #{} has no lease", task.id)))?;
    Ok(Claimed {
        task,
        lease,
        handoff: None,
    })
}

/// Records a claim's event, counts it, and reserves the task's declared paths.
pub(super) async fn record_claim(tx: &mut Tx, c: &Claimed) -> StoreResult<()> {
    tx.count(Count::Claim, &c.task.project);
    tx.event(NewEvent::task(
        c.task.id,
        &c.lease.holder,
        Change::TaskClaimed {
            holder: c.lease.holder.clone(),
            fence: c.lease.fence,
            attempt: c.task.attempts,
            expires_at: c.lease.expires_at,
        },
    ));
    if !c.task.paths.is_empty() {
        reservations::reserve_in(tx, &c.task, &c.lease.holder, c.task.paths.clone(), true).await?;
    }
    Ok(())
}

/// An in-progress task whose lease ran out, as the reaper needs it.
struct Expired {
    id: i64,
    holder: String,
    fence: i64,
    attempts: i64,
    max_attempts: i64,
    project: String,
}

impl Expired {
    /// Reads a row selected by [`reap`].
    fn read(row: &PgRow) -> StoreResult<Expired> {
        Ok(Expired {
            id: row.try_get(0)?,
            holder: row.try_get(1)?,
            fence: row.try_get(2)?,
            attempts: row.try_get(3)?,
            max_attempts: row.try_get(4)?,
            project: row.try_get(5)?,
        })
    }
}

/// Returns expired leases (all, or only task `only`'s) to `available`, or to `failed` when
/// their attempts are used up (see `lifecycle::expiring`). Returns how many.
///
/// The expired rows are locked in id order before they are changed, skipping rows another
/// change holds (that change deals with them, and waiting could deadlock with it); a row
/// changed meanwhile is judged again as it now stands, and left alone when its lease is no
/// longer expired.
pub(in crate::store::postgres) async fn reap(tx: &mut Tx, only: Option<i64>) -> StoreResult<usize> {
    const COLUMNS: &str = "SELECT id, lease_holder, fence, attempts, max_attempts, project FROM tasks \
         WHERE status = 'in_progress' AND lease_expires_at <= $1";
    let now = tx.now;
    let found = match only {
        Some(id) => {
            sqlx::query(&format!("{COLUMNS} AND id = $2 FOR UPDATE"))
                .bind(now.millis())
                .bind(id)
                .fetch_all(tx.db())
                .await?
        }
        None => {
            // A row another change holds is being dealt with there (a claim of it, say, which
            // returns its expired lease itself); waiting for it could deadlock with that change.
            sqlx::query(&format!("{COLUMNS} ORDER BY id FOR UPDATE SKIP LOCKED"))
                .bind(now.millis())
                .fetch_all(tx.db())
                .await?
        }
    };
    let expired = found.iter().map(Expired::read).collect::<StoreResult<Vec<_>>>()?;
    if expired.is_empty() {
        return Ok(0);
    }
    let outcomes: Vec<_> = expired
        .iter()
        .map(|e| expiring(&e.holder, e.attempts, e.max_attempts))
        .collect();
    let ids: Vec<i64> = expired.iter().map(|e| e.id).collect();
    let statuses: Vec<&str> = outcomes
        .iter()
        .map(|o| if o.last { "failed" } else { "available" })
        .collect();
    let reasons: Vec<&str> = outcomes.iter().map(|o| o.reason.as_str()).collect();
    sqlx::query(
        "UPDATE tasks SET status = u.status, status_reason = u.reason, lease_holder = NULL, \
             lease_expires_at = NULL, updated_at = $4 \
         FROM unnest($1::int8[], $2::text[], $3::text[]) AS u(id, status, reason) \
         WHERE tasks.id = u.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&reasons)
    .bind(now.millis())
    .execute(tx.db())
    .await?;
    let last: Vec<i64> = expired
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.last)
        .map(|(e, _)| e.id)
        .collect();
    if !last.is_empty() {
        deps::lock_dependents(tx, &last, Dependents::Block).await?;
    }
    for (e, outcome) in expired.iter().zip(outcomes) {
        tx.count(Count::LeaseExpiry, &e.project);
        reservations::end_all(tx, e.id, None, "expired").await?;
        tx.event(NewEvent {
            task_id: Some(e.id),
            actor: None,
            change: Change::TaskLeaseExpired {
                holder: e.holder.clone(),
                fence: e.fence,
                last: outcome.last,
            },
        });
        if outcome.last {
            tx.event(NewEvent {
                task_id: Some(e.id),
                actor: None,
                change: Change::TaskFailed {
                    holder: Some(e.holder.clone()),
                    fence: e.fence,
                    reason: outcome.reason,
                    last: true,
                    retry_at: None,
                },
            });
            deps::block_dependents(tx, e.id, Status::Failed, "lease-reaper").await?;
        } else {
            tx.ready(e.id);
        }
    }
    Ok(expired.len())
}

/// Refuses a claim by an agent deactivated (or removed) after its request was authenticated:
/// its token stopped working, and so must a long poll it had already begun. The agent's row is
/// share-locked until the claim commits, so a deactivation either comes first (and is seen
/// here) or waits, and then finds the claim's lease to release.
pub(in crate::store::postgres) async fn check_active(tx: &mut Tx, who: &Principal) -> StoreResult<()> {
    match is_active(tx, who).await? {
        true => Ok(()),
        false => Err(deactivated(who)),
    }
}

/// Whether `who` may take work, its agent row share-locked until the change ends. Taken
/// before any task row, as a deactivation takes the agent row before the tasks it releases.
async fn is_active(tx: &mut Tx, who: &Principal) -> StoreResult<bool> {
    let Some(id) = who.agent_id else {
        return Ok(true);
    };
    let active: Option<bool> =
        sqlx::query_scalar("SELECT deactivated_at IS NULL FROM agents WHERE id = $1 FOR SHARE")
            .bind(id)
            .fetch_optional(tx.db())
            .await?;
    Ok(active == Some(true))
}

/// The refusal of a deactivated agent's claim.
fn deactivated(who: &Principal) -> StoreError {
    StoreError::forbidden(format!("agent {} was deactivated: it can take no work", who.name))
}

/// Claims task `id` for `who` inside the caller's change: its row is locked, an expired lease
/// on it is returned first, then `lifecycle::check_claim` decides.
pub(in crate::store::postgres) async fn claim_in(
    tx: &mut Tx,
    id: i64,
    who: &Principal,
    lease: Duration,
    human_kinds: &[String],
) -> StoreResult<Claimed> {
    check_active(tx, who).await?;
    let now = tx.now;
    let mut task = lock_task(tx.db(), id).await?;
    let expired =
        task.status == Status::InProgress && task.lease.as_ref().is_some_and(|l| l.expires_at <= now);
    if expired {
        reap(tx, Some(id)).await?;
        task = fetch_task(tx.db(), id).await?;
    }
    check_claim(&task, who, human_kinds, now)?;
    reservations::check_declared(tx, &task).await?;
    let row = sqlx::query(&format!(
        "UPDATE tasks SET {} WHERE id = $5 RETURNING {TASK_COLUMNS}",
        claim_set_one()
    ))
    .bind(now.millis())
    .bind(&who.name)
    .bind(now.plus_millis(millis(lease)).millis())
    .bind(millis(lease))
    .bind(id)
    .fetch_optional(tx.db())
    .await?
    .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
    let claim = claimed(rows::task(&row)?)?;
    record_claim(tx, &claim).await?;
    Ok(claim)
}

/// Which claim-next statement to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// Claims the best ready task nobody else holds, in one statement.
    Best,
    /// Claims one given ready task (the last parameter), unless another transaction holds it.
    One,
    /// Lists ready tasks (id, priority, paths) in claim order after a (priority, id) given by
    /// the last two parameters, [`SCAN_BATCH`] at a time, without locking them.
    Scan,
}

/// What claim-next hands out to one caller (see `domain::claim`), as statement parameters.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Wanted {
    /// The caller is a person (or an admin).
    person: bool,
    /// Only these projects, if given.
    projects: Option<Vec<String>>,
    /// The caller's capabilities as a JSON array; `None` when it names none.
    capabilities: Option<String>,
    /// The kinds meant for people, when the caller is an agent and some are configured.
    kinds: Option<Vec<String>>,
}

impl Wanted {
    /// What `who`, asking with `filter`, may be handed.
    pub(super) fn new(who: &Principal, filter: &ClaimFilter, human_kinds: &[String]) -> Wanted {
        let person = who.is_person();
        Wanted {
            person,
            projects: filter.projects.clone(),
            capabilities: (!filter.capabilities.is_empty()).then(|| rows::to_json(&filter.capabilities)),
            kinds: (!person && !human_kinds.is_empty()).then(|| human_kinds.to_vec()),
        }
    }

    /// The condition a task `t` must meet, its parameters numbered from `$first` (`$1` is
    /// now); and the next free parameter number.
    pub(super) fn condition(&self, first: usize) -> (String, usize) {
        let mut next = first;
        let mut param = || {
            next += 1;
            format!("${}", next - 1)
        };
        let mut filter =
            String::from("t.status = 'available' AND t.not_before <= $1 AND t.attempts < t.max_attempts");
        if self.projects.is_some() {
            filter.push_str(&format!(" AND t.project = ANY({})", param()));
        }
        match self.capabilities {
            None => filter.push_str(" AND t.capabilities = '[]'"),
            Some(_) => filter.push_str(&format!(
                " AND (t.capabilities = '[]' OR t.capabilities::jsonb <@ {}::jsonb)",
                param()
            )),
        }
        if self.person {
            filter.push_str(" AND (t.route <> 'spawn' OR t.routed_to IS NOT DISTINCT FROM 'human')");
        } else {
            filter
                .push_str(" AND t.route NOT IN ('spawn', 'human') AND t.routed_to IS DISTINCT FROM 'human'");
            if self.kinds.is_some() {
                filter.push_str(&format!(
                    " AND NOT (t.route = 'auto' AND t.kind = ANY({}))",
                    param()
                ));
            }
        }
        (filter, next)
    }

    /// The statement for `pick`. Parameters: `$1` now; for the claims `$2` holder, `$3` lease
    /// end, `$4` lease length; then the condition's ([`Wanted::bind`]); then `pick`'s own.
    fn sql(&self, pick: Pick) -> String {
        match pick {
            Pick::Best | Pick::One => {
                let (mut filter, next) = self.condition(5);
                match pick {
                    Pick::One => filter.push_str(&format!(" AND t.id = ${next}")),
                    _ => filter.push_str(" AND t.paths = '[]'"),
                }
                format!(
                    "WITH pick AS (SELECT t.id FROM tasks t WHERE {filter} \
                         ORDER BY t.priority, t.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     UPDATE tasks SET {} WHERE id = (SELECT id FROM pick) \
                     RETURNING {TASK_COLUMNS}",
                    claim_set_one()
                )
            }
            Pick::Scan => {
                let (filter, next) = self.condition(2);
                format!(
                    "SELECT t.id, t.priority, t.paths FROM tasks t WHERE {filter} \
                         AND (t.priority, t.id) > (${}, ${}) \
                     ORDER BY t.priority, t.id LIMIT {SCAN_BATCH}",
                    next,
                    next + 1
                )
            }
        }
    }

    /// Binds the condition's parameters, in [`Wanted::condition`]'s order.
    pub(super) fn bind<'q>(&self, mut query: Query<'q, Pg, PgArguments>) -> Query<'q, Pg, PgArguments> {
        if let Some(projects) = &self.projects {
            query = query.bind(projects.clone());
        }
        if let Some(capabilities) = &self.capabilities {
            query = query.bind(capabilities.clone());
        }
        if let Some(kinds) = &self.kinds {
            query = query.bind(kinds.clone());
        }
        query
    }
}

/// A new lease for `who` of length `lease`, from the change's time: the claim statements'
/// parameters `$1` to `$4`.
struct NewLease<'a> {
    now: i64,
    holder: &'a str,
    until: i64,
    length: i64,
}

impl NewLease<'_> {
    /// `sql` with the lease's parameters bound.
    fn query<'q>(&self, sql: &'q str) -> Query<'q, Pg, PgArguments> {
        sqlx::query(sql)
            .bind(self.now)
            .bind(self.holder.to_string())
            .bind(self.until)
            .bind(self.length)
    }
}

/// One claim-next inside the caller's change: expired leases are returned first (they may be
/// the best work there is), then the best ready task is claimed.
pub(super) async fn claim_next_in(
    tx: &mut Tx,
    who: &Principal,
    filter: &ClaimFilter,
    lease: Duration,
    human_kinds: &[String],
) -> StoreResult<Option<Claimed>> {
    let now = tx.now;
    // In one statement: whether the agent may take work (its row share-locked, before any task
    // row, as a deactivation takes it), and what the claim must see to first.
    let (active, expired, reserved, declaring): (bool, bool, bool, bool) = match who.agent_id {
        Some(agent) => sqlx::query_as(&format!(
            "SELECT deactivated_at IS NULL, {SITUATION} FROM agents WHERE id = $2 FOR SHARE"
        ))
        .bind(now.millis())
        .bind(agent)
        .fetch_optional(tx.db())
        .await?
        .unwrap_or((false, false, false, false)),
        None => {
            let (expired, reserved, declaring): (bool, bool, bool) =
                sqlx::query_as(&format!("SELECT {SITUATION}"))
                    .bind(now.millis())
                    .fetch_one(tx.db())
                    .await?;
            (true, expired, reserved, declaring)
        }
    };
    // Reaping ends reservations: whether any are left is asked again.
    let reserved = match expired {
        true => {
            reap(tx, None).await?;
            reservations::any(tx.db()).await?
        }
        false => reserved,
    };
    let wanted = Wanted::new(who, filter, human_kinds);
    let new = NewLease {
        now: now.millis(),
        holder: &who.name,
        until: now.plus_millis(millis(lease)).millis(),
        length: millis(lease),
    };
    // While paths are reserved, or tasks that declare paths wait (whose claim reserves them,
    // perhaps against another claim made at the same moment), claims go one at a time under
    // the reserving lock, passing over tasks declaring a reserved path. Otherwise the best task
    // is taken in one statement; one that declares paths (filed meanwhile) is left to that path.
    let row = match reserved || declaring {
        false => {
            let sql = wanted.sql(Pick::Best);
            wanted.bind(new.query(&sql)).fetch_optional(tx.db()).await?
        }
        true => claim_clear_of_reservations(tx, &wanted, &new).await?,
    };
    let Some(row) = row else {
        return Ok(None);
    };
    // Refused once there was work to hand out, as a deactivated agent's long poll finds out
    // then; refusing now undoes the claim with the rest of the change.
    if !active {
        return Err(deactivated(who));
    }
    let claim = claimed(rows::task(&row)?)?;
    record_claim(tx, &claim).await?;
    Ok(Some(claim))
}

/// Claim-next while reservations exist: ready tasks are read in claim order, a batch at a
/// time, and the first whose declared paths no live reservation of another lease holds is
/// claimed, unless another transaction holds its row (then the next is tried). The reserving
/// lock is taken first, so the live reservations cannot change until the claim commits.
async fn claim_clear_of_reservations(
    tx: &mut Tx,
    wanted: &Wanted,
    new: &NewLease<'_>,
) -> StoreResult<Option<PgRow>> {
    reservations::lock_reserving(tx.db()).await?;
    let now = tx.now;
    let live = reservations::live(tx.db(), now).await?;
    let (scan, one) = (wanted.sql(Pick::Scan), wanted.sql(Pick::One));
    let mut after = (i64::MIN, i64::MIN);
    loop {
        let batch = wanted
            .bind(sqlx::query(&scan).bind(new.now))
            .bind(after.0)
            .bind(after.1)
            .fetch_all(tx.db())
            .await?;
        for row in &batch {
            let (id, priority, paths): (i64, i64, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            after = (priority, id);
            let paths: Vec<String> = json("task paths", &paths)?;
            if !paths.is_empty()
                && reservations::clash_for(tx.db(), id, &paths, true, &live)
                    .await?
                    .is_some()
            {
                continue;
            }
            let taken = wanted
                .bind(new.query(&one))
                .bind(id)
                .fetch_optional(tx.db())
                .await?;
            if taken.is_some() {
                return Ok(taken);
            }
        }
        if (batch.len() as i64) < SCAN_BATCH {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Pick, Wanted};

    /// A caller's wants: `projects` projects, one capability, one kind for people.
    fn wanted(person: bool, projects: Option<usize>, capabilities: bool, kinds: bool) -> Wanted {
        Wanted {
            person,
            projects: projects.map(|n| (0..n).map(|i| format!("p{i}")).collect()),
            capabilities: capabilities.then(|| "[\"rust\"]".to_string()),
            kinds: kinds.then(|| vec!["architecture".to_string()]),
        }
    }

    #[test]
    fn the_claim_statements_number_only_the_parameters_they_use() {
        let agent = wanted(false, None, false, true).sql(Pick::Best);
        assert!(
            agent.contains("t.capabilities = '[]'") && !agent.contains("jsonb"),
            "{agent}"
        );
        assert!(agent.contains("t.kind = ANY($5)"), "{agent}");
        assert!(agent.contains("FOR UPDATE SKIP LOCKED"), "{agent}");
        let narrow = wanted(false, Some(2), true, true).sql(Pick::One);
        assert!(narrow.contains("t.project = ANY($5)"), "{narrow}");
        assert!(narrow.contains("<@ $6::jsonb"), "{narrow}");
        assert!(
            narrow.contains("t.kind = ANY($7)") && narrow.contains("t.id = $8"),
            "{narrow}"
        );
        let person = wanted(true, None, true, false).sql(Pick::Best);
        assert!(person.contains("IS NOT DISTINCT FROM 'human'") && !person.contains("t.kind"));
        let scan = wanted(false, Some(1), false, false).sql(Pick::Scan);
        assert!(
            scan.contains("t.project = ANY($2)") && scan.contains("> ($3, $4)"),
            "{scan}"
        );
        assert!(!scan.contains("FOR UPDATE"), "{scan}");
    }
}
