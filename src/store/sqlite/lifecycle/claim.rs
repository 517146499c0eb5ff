//! Taking work on SQLite: claim by id, claim-next's query and claim, and the return of expired
//! leases that both do first (to `available`, or `failed` when attempts are used up).

use std::time::Duration;

use rusqlite::{params, params_from_iter, OptionalExtension, ToSql};

use crate::domain::lifecycle::{check_claim, expiring};
use crate::domain::{Change, NewEvent, Principal, Status, Task};
use crate::store::{ClaimFilter, Claimed, StoreError, StoreResult};

use super::super::engine::Tx;
use super::super::rows::json;
use super::super::{deps, fetch_task, reservations};
use super::{millis, update_task};
use crate::store::announce::Announce;
use crate::store::announce::Count;

/// A claim of task `?5` (parameters: 1 holder, 2 lease end, 3 lease length, 4 now, 5 id).
const CLAIM: &str = "UPDATE tasks SET status = 'in_progress', fence = fence + 1, \
    attempts = attempts + 1, lease_holder = ?1, lease_expires_at = ?2, lease_ms = ?3, claimed_at = ?4, \
    updated_at = ?4, last_progress_at = ?4, status_reason = NULL, not_before = 0, stalled_at = NULL \
    WHERE id = ?5";

/// The claim a row just changed to in progress stands for.
fn claimed(task: Task) -> StoreResult<Claimed> {
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
fn record_claim(tx: &mut Tx<'_>, c: &Claimed) -> StoreResult<()> {
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
        reservations::reserve_in(tx, &c.task, &c.lease.holder, c.task.paths.clone(), true)?;
    }
    Ok(())
}

/// Returns expired leases (all, or only task `only`'s) to `available`, or to `failed` when
/// their attempts are used up (see `lifecycle::expiring`). Returns how many.
pub(in crate::store::sqlite) fn reap(tx: &mut Tx<'_>, only: Option<i64>) -> StoreResult<usize> {
    let expired = tx
        .prepare_cached(
            "SELECT id, lease_holder, fence, attempts, max_attempts, project FROM tasks \
             WHERE status = 'in_progress' AND lease_expires_at <= ?1 AND (?2 IS NULL OR id = ?2)",
        )?
        .query_map(params![tx.now.millis(), only], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, String>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, holder, fence, attempts, max_attempts, project) in &expired {
        tx.count(Count::LeaseExpiry, project);
        let outcome = expiring(holder, *attempts, *max_attempts);
        tx.prepare_cached(
            "UPDATE tasks SET status = ?2, status_reason = ?3, lease_holder = NULL, lease_expires_at = NULL, \
             updated_at = ?4 WHERE id = ?1",
        )?
        .execute(params![
            id,
            if outcome.last { "failed" } else { "available" },
            outcome.reason,
            tx.now.millis()
        ])?;
        reservations::end_all(tx, *id, None, "expired")?;
        tx.event(NewEvent {
            task_id: Some(*id),
            actor: None,
            change: Change::TaskLeaseExpired {
                holder: holder.clone(),
                fence: *fence,
                last: outcome.last,
            },
        });
        if outcome.last {
            tx.event(NewEvent {
                task_id: Some(*id),
                actor: None,
                change: Change::TaskFailed {
                    holder: Some(holder.clone()),
                    fence: *fence,
                    reason: outcome.reason,
                    last: true,
                    retry_at: None,
                },
            });
            deps::block_dependents(tx, *id, Status::Failed, "lease-reaper")?;
        } else {
            tx.ready(*id);
        }
    }
    Ok(expired.len())
}

/// Refuses a claim by an agent deactivated (or removed) after its request was authenticated:
/// its token stopped working, and so must a long poll it had already begun.
fn check_active(tx: &Tx<'_>, who: &Principal) -> StoreResult<()> {
    let Some(id) = who.agent_id else {
        return Ok(());
    };
    let active = tx
        .prepare_cached("SELECT deactivated_at IS NULL FROM agents WHERE id = ?1")?
        .query_row([id], |row| row.get::<_, bool>(0))
        .optional()?;
    match active {
        Some(true) => Ok(()),
        _ => Err(StoreError::forbidden(format!(
            "agent {} was deactivated: it can take no work",
            who.name
        ))),
    }
}

/// Claims task `id` for `who` inside the caller's change: an expired lease on it is returned
/// first, then `lifecycle::check_claim` decides.
pub(in crate::store::sqlite) fn claim_in(
    tx: &mut Tx<'_>,
    id: i64,
    who: &Principal,
    lease: Duration,
    human_kinds: &[String],
) -> StoreResult<Claimed> {
    check_active(tx, who)?;
    reap(tx, Some(id))?;
    let task = fetch_task(tx, id)?;
    check_claim(&task, who, human_kinds, tx.now)?;
    reservations::check_declared(tx, &task)?;
    let now = tx.now;
    let task = update_task(
        tx,
        id,
        CLAIM,
        params![
            who.name,
            now.plus_millis(millis(lease)).millis(),
            millis(lease),
            now.millis(),
            id
        ],
    )?
    .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
    let claim = claimed(task)?;
    record_claim(tx, &claim)?;
    Ok(claim)
}

/// The claim-next query for a caller: the id of the best ready task it may take (see
/// `domain::claim`), or with `scan`, the ids and declared paths of all of them, best first.
/// Its text depends only on whether the caller is a person, how many projects and
/// capabilities it names, the configured kinds for people, and `scan`.
fn claim_next_sql(
    scan: bool,
    person: bool,
    projects: Option<usize>,
    capabilities: usize,
    human_kinds: &[String],
) -> String {
    // Parameters: 1 now, then the projects, then the capabilities.
    let list = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut filter =
        String::from("t.status = 'available' AND t.not_before <= ?1 AND t.attempts < t.max_attempts");
    if let Some(n) = projects {
        filter.push_str(&format!(" AND t.project IN ({})", list(2, n)));
    }
    let caps_from = 2 + projects.unwrap_or(0);
    if capabilities == 0 {
        filter.push_str(" AND t.capabilities = '[]'");
    } else {
        filter.push_str(&format!(
            " AND (t.capabilities = '[]' OR NOT EXISTS (SELECT 1 FROM json_each(t.capabilities) c \
              WHERE c.value NOT IN ({})))",
            list(caps_from, capabilities)
        ));
    }
    if person {
        filter.push_str(" AND (t.route <> 'spawn' OR t.routed_to IS 'human')");
    } else {
        filter.push_str(" AND t.route NOT IN ('spawn', 'human') AND t.routed_to IS NOT 'human'");
        if !human_kinds.is_empty() {
            let kinds: Vec<String> = human_kinds
                .iter()
                .map(|k| format!("'{}'", k.replace('\'', "''")))
                .collect();
            filter.push_str(&format!(
                " AND NOT (t.route = 'auto' AND t.kind IN ({}))",
                kinds.join(", ")
            ));
        }
    }
    if scan {
        format!("SELECT t.id, t.paths FROM tasks t WHERE {filter} ORDER BY t.priority, t.id")
    } else {
        format!("SELECT t.id FROM tasks t WHERE {filter} ORDER BY t.priority, t.id LIMIT 1")
    }
}

/// One claim-next inside the caller's change: expired leases are returned first (they may be
/// the best work there is), then the best ready task is claimed.
pub(super) fn claim_next_in(
    tx: &mut Tx<'_>,
    who: &Principal,
    filter: &ClaimFilter,
    lease: Duration,
    human_kinds: &[String],
) -> StoreResult<Option<Claimed>> {
    let expired = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'in_progress' AND lease_expires_at <= ?1)",
        )?
        .query_row([tx.now.millis()], |row| row.get::<_, bool>(0))?;
    if expired {
        reap(tx, None)?;
    }
    // While paths are reserved, tasks declaring a reserved one are passed over.
    let scan = reservations::any(tx)?;
    let sql = claim_next_sql(
        scan,
        who.is_person(),
        filter.projects.as_ref().map(Vec::len),
        filter.capabilities.len(),
        human_kinds,
    );
    let now = tx.now.millis();
    let mut values: Vec<&dyn ToSql> = vec![&now];
    values.extend(filter.projects.iter().flatten().map(|p| p as &dyn ToSql));
    values.extend(filter.capabilities.iter().map(|c| c as &dyn ToSql));
    let best = if scan {
        let live = reservations::live(tx, tx.now)?;
        let mut statement = tx.prepare_cached(&sql)?;
        let mut rows = statement.query(params_from_iter(values))?;
        let mut best = None;
        while let Some(row) = rows.next()? {
            let (id, paths) = (row.get::<_, i64>(0)?, row.get::<_, String>(1)?);
            let paths: Vec<String> = json("task paths", &paths)?;
            if paths.is_empty() || reservations::clash_for(tx, id, &paths, true, &live)?.is_none() {
                best = Some(id);
                break;
            }
        }
        best
    } else {
        tx.prepare_cached(&sql)?
            .query_row(params_from_iter(values), |row| row.get::<_, i64>(0))
            .optional()?
    };
    let Some(id) = best else {
        return Ok(None);
    };
    check_active(tx, who)?;
    let until = tx.now.plus_millis(millis(lease)).millis();
    let task = update_task(tx, id, CLAIM, params![who.name, until, millis(lease), now, id])?
        .ok_or_else(|| StoreError::Corrupt(format!("task #{id} vanished while it was claimed")))?;
    let claim = claimed(task)?;
    record_claim(tx, &claim)?;
    Ok(Some(claim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_query_names_only_what_the_caller_asks_for() {
        let kinds = vec!["architecture".to_string(), "o'brien".to_string()];
        let agent = claim_next_sql(false, false, None, 0, &kinds);
        assert!(agent.contains("t.capabilities = '[]'") && !agent.contains("json_each"));
        assert!(
            agent.contains("t.kind IN ('architecture', 'o''brien')"),
            "{agent}"
        );
        let narrow = claim_next_sql(false, false, Some(2), 3, &kinds);
        assert!(narrow.contains("t.project IN (?2, ?3)"), "{narrow}");
        assert!(narrow.contains("NOT IN (?4, ?5, ?6)"), "{narrow}");
        let person = claim_next_sql(false, true, None, 1, &kinds);
        assert!(person.contains("t.routed_to IS 'human'") && !person.contains("t.kind IN"));
        let scan = claim_next_sql(true, false, None, 0, &kinds);
        assert!(
            scan.starts_with("SELECT t.id, t.paths") && !scan.contains("LIMIT"),
            "{scan}"
        );
    }
}
