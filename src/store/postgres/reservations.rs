//! Path reservations on PostgreSQL. Rows hold live reservations only; one counts while its task
//! is held under its fence and the lease has not run out (by the database's clock), and is
//! deleted, with a `reservation.released` event, in the change that ends its lease. Ending one
//! wakes the tasks whose declared paths it was keeping from claim-next.
//!
//! Whether a new reservation clashes depends on every other live one, so each change that
//! judges a clash before reserving (a reservation, a claim of a task that declares paths,
//! claim-next passing over such tasks) first takes one transaction-scoped advisory lock: two
//! of them cannot both find the paths free. A change that ends reservations takes it too
//! (after deleting them, so only when there were some), so claim-next sees a consistent picture
//! of reservations and ready tasks.

use sqlx::postgres::PgRow;
use sqlx::PgConnection;

use crate::domain::lifecycle::check_hold;
use crate::domain::paths::{first_overlap, overlap};
use crate::domain::reservation::{clash, Clash, MAX_PATTERNS_PER_LEASE};
use crate::domain::{Change, InputError, NewEvent, Principal, Refused, Reservation, Task, Timestamp};
use crate::store::{Reservations, StoreError, StoreResult};

use super::lifecycle::reap;
use super::rows::{json, reservation, to_json};
use super::tx::Tx;
use super::{lock_task, Postgres};
use crate::store::announce::Announce;

/// The advisory lock key held, until its transaction ends, by a change that judges clashes
/// before it reserves.
const RESERVING_LOCK: i64 = 0x7479_7265_7376; // "tyresv"

/// The column list every reservation query selects (from `reservations r`), in [`read`]'s order;
/// a macro so the queries are literals.
macro_rules! columns {
    () => {
        "r.id, r.task_id, r.holder, r.fence, r.paths, r.exclusive, r.created_at"
    };
}

/// The live reservations, joined with their tasks; the query ends with the time to judge
/// leases by.
macro_rules! live_at {
    () => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM reservations r JOIN tasks t ON t.id = r.task_id \
             WHERE t.status = 'in_progress' AND t.fence = r.fence AND t.lease_expires_at > "
        )
    };
}

/// Reads rows selected with `columns!()`.
fn read_all(rows: &[PgRow]) -> StoreResult<Vec<Reservation>> {
    rows.iter().map(reservation).collect()
}

/// Takes the reserving lock (see the module's header) until the caller's transaction ends.
/// Taking it again in the same transaction is harmless.
pub(super) async fn lock_reserving(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(RESERVING_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every live reservation at `now`, oldest first.
pub(super) async fn live(conn: &mut PgConnection, now: Timestamp) -> StoreResult<Vec<Reservation>> {
    let found = sqlx::query(concat!(live_at!(), "$1 ORDER BY r.id"))
        .bind(now.millis())
        .fetch_all(conn)
        .await?;
    read_all(&found)
}

/// The tasks whose reservations never clash with task `id`'s: itself, its ancestors and its
/// descendants.
async fn kin(conn: &mut PgConnection, id: i64) -> StoreResult<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE up(id) AS (SELECT $1::bigint UNION \
             SELECT t.parent_id FROM tasks t JOIN up ON t.id = up.id WHERE t.parent_id IS NOT NULL), \
         down(id) AS (SELECT $1::bigint UNION SELECT t.id FROM tasks t JOIN down ON t.parent_id = down.id) \
         SELECT id FROM up UNION SELECT id FROM down",
    )
    .bind(id)
    .fetch_all(conn)
    .await?)
}

/// The live reservation (of `live`) that task `id` reserving `paths` would clash with, if any;
/// its kin's never do (see `domain::reservation::clash`).
pub(super) async fn clash_for(
    conn: &mut PgConnection,
    id: i64,
    paths: &[String],
    exclusive: bool,
    live: &[Reservation],
) -> StoreResult<Option<Clash>> {
    // Kin are looked up only when something is in the way.
    if clash(&[id], paths, exclusive, live).is_none() {
        return Ok(None);
    }
    Ok(clash(&kin(conn, id).await?, paths, exclusive, live))
}

/// True when any reservation row exists (live or not yet ended): claim-next looks closer then.
pub(super) async fn any(conn: &mut PgConnection) -> StoreResult<bool> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM reservations)")
        .fetch_one(conn)
        .await?)
}

/// Reserves `paths` for `task`'s current lease inside the caller's change; refused when a live
/// reservation of another lease is in the way. Holds the reserving lock from the check on.
pub(super) async fn reserve_in(
    tx: &mut Tx,
    task: &Task,
    actor: &str,
    paths: Vec<String>,
    exclusive: bool,
) -> StoreResult<Reservation> {
    let lease = task
        .lease
        .clone()
        .ok_or_else(|| StoreError::Corrupt(format!("task #{} is reserved without a lease", task.id)))?;
    lock_reserving(tx.db()).await?;
    let now = tx.now;
    let live = live(tx.db(), now).await?;
    let held: usize = live
        .iter()
        .filter(|r| r.task_id == task.id && r.fence == lease.fence)
        .map(|r| r.paths.len())
        .sum();
    if held + paths.len() > MAX_PATTERNS_PER_LEASE {
        return Err(InputError::new(
            "paths",
            format!(
                "a lease may hold at most {MAX_PATTERNS_PER_LEASE} patterns and this one holds {held}: \
                 release some first"
            ),
        )
        .into());
    }
    if let Some(clash) = clash_for(tx.db(), task.id, &paths, exclusive, &live).await? {
        return Err(StoreError::conflict(clash.message()));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO reservations (task_id, fence, holder, paths, exclusive, created_at) \
         VALUES ($1, $2, $3, $4, $5::boolean, $6) RETURNING id",
    )
    .bind(task.id)
    .bind(lease.fence)
    .bind(&lease.holder)
    .bind(to_json(&paths))
    .bind(exclusive)
    .bind(now.millis())
    .fetch_one(tx.db())
    .await?;
    let reservation = Reservation {
        id,
        task_id: task.id,
        holder: lease.holder,
        fence: lease.fence,
        paths,
        exclusive,
        created_at: now,
    };
    tx.event(NewEvent::task(
        task.id,
        actor,
        Change::ReservationCreated {
            reservation: reservation.id,
            holder: reservation.holder.clone(),
            fence: reservation.fence,
            paths: reservation.paths.clone(),
            exclusive,
        },
    ));
    Ok(reservation)
}

/// Ends every reservation of task `id` inside the caller's change (its lease ended: `reason`
/// says how), each with an event by `actor`; wakes the tasks they kept waiting.
pub(super) async fn end_all(tx: &mut Tx, id: i64, actor: Option<&str>, reason: &str) -> StoreResult<()> {
    let deleted = sqlx::query(concat!(
        "DELETE FROM reservations r WHERE r.task_id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .fetch_all(tx.db())
    .await?;
    if !deleted.is_empty() {
        // Held to commit: a claim-next judging clashes (which holds it from before it reads
        // the live reservations until it commits) sees these end wholly before or after it,
        // never between that read and its scan of the ready tasks, when it would pass over a
        // task this freed and hand out a lower one.
        lock_reserving(tx.db()).await?;
    }
    let mut ended = read_all(&deleted)?;
    ended.sort_by_key(|r| r.id);
    ended_with(tx, ended, actor, reason).await
}

/// Records the end of the reservations `ended`, just deleted inside the caller's change, each
/// with an event by `actor` saying `reason`; wakes the tasks they kept waiting.
async fn ended_with(
    tx: &mut Tx,
    ended: Vec<Reservation>,
    actor: Option<&str>,
    reason: &str,
) -> StoreResult<()> {
    let mut patterns = Vec::new();
    for r in ended {
        patterns.extend(r.paths.iter().cloned());
        tx.event(NewEvent {
            task_id: Some(r.task_id),
            actor: actor.map(str::to_string),
            change: Change::ReservationReleased {
                reservation: r.id,
                holder: r.holder,
                fence: r.fence,
                paths: r.paths,
                reason: reason.to_string(),
            },
        });
    }
    if patterns.is_empty() {
        return Ok(());
    }
    wake_declaring(tx, &patterns).await
}

/// Available tasks with declared paths looked at when a reservation ends: the best ones, which
/// claim-next would hand out first; the cost of ending a reservation stays bounded however
/// many tasks declare paths.
const WAKE_SCAN: i64 = 256;

/// Wakes the best available tasks whose declared paths overlap `patterns`.
async fn wake_declaring(tx: &mut Tx, patterns: &[String]) -> StoreResult<()> {
    let declaring: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, paths FROM tasks WHERE status = 'available' AND paths <> '[]' \
         ORDER BY priority, id LIMIT $1",
    )
    .bind(WAKE_SCAN)
    .fetch_all(tx.db())
    .await?;
    for (id, paths) in declaring {
        let paths: Vec<String> = json("task paths", &paths)?;
        if first_overlap(&paths, patterns).is_some() {
            tx.ready(id);
        }
    }
    Ok(())
}

/// Claims reserve a task's declared paths: refused (`409`) when another lease holds one. Leases
/// that ran out are returned first, so their reservations end (with their events) and are not
/// in the way; the reaping skips rows other changes hold, so it never waits with the claimed
/// row locked. The reserving lock is held from the check on, through the claim's own
/// reservation.
pub(super) async fn check_declared(tx: &mut Tx, task: &Task) -> StoreResult<()> {
    if task.paths.is_empty() || !any(tx.db()).await? {
        return Ok(());
    }
    reap(tx, None).await?;
    lock_reserving(tx.db()).await?;
    let now = tx.now;
    let live = live(tx.db(), now).await?;
    match clash_for(tx.db(), task.id, &task.paths, true, &live).await? {
        Some(clash) => Err(StoreError::conflict(format!(
            "task #{} cannot be claimed now: {}",
            task.id,
            clash.message()
        ))),
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl Reservations for Postgres {
    async fn reserve(
        &self,
        id: i64,
        who: &Principal,
        fence: i64,
        paths: Vec<String>,
        exclusive: bool,
    ) -> StoreResult<Reservation> {
        let mut tx = self.begin().await?;
        // Every lease that ran out is returned first: its reservations are in nobody's way,
        // and a holder whose own lease ran out is told so.
        reap(&mut tx, None).await?;
        let task = lock_task(tx.db(), id).await?;
        check_hold(&task, who, fence)?;
        let reservation = reserve_in(&mut tx, &task, &who.name, paths, exclusive).await?;
        self.commit(tx, reservation).await
    }

    async fn unreserve(
        &self,
        id: i64,
        reservation: i64,
        who: &Principal,
        fence: i64,
    ) -> StoreResult<Reservation> {
        let mut tx = self.begin().await?;
        let task = lock_task(tx.db(), id).await?;
        check_hold(&task, who, fence)?;
        let deleted = sqlx::query(concat!(
            "DELETE FROM reservations r WHERE r.id = $1 AND r.task_id = $2 AND r.fence = $3 RETURNING ",
            columns!()
        ))
        .bind(reservation)
        .bind(id)
        .bind(fence)
        .fetch_all(tx.db())
        .await?;
        let found = read_all(&deleted)?;
        let Some(r) = found.first().cloned() else {
            return Err(Refused::NotFound(format!("reservation {reservation} of task #{id}")).into());
        };
        // As in `end_all`.
        lock_reserving(tx.db()).await?;
        ended_with(&mut tx, found, Some(&who.name), "released").await?;
        self.commit(tx, r).await
    }

    async fn reservations(
        &self,
        path: Option<String>,
        task_id: Option<i64>,
    ) -> StoreResult<Vec<Reservation>> {
        // Leases are judged by the database's clock, as everywhere else.
        let found = sqlx::query(concat!(live_at!(), "taskyard_now_ms() ORDER BY r.id"))
            .fetch_all(&self.pool)
            .await?;
        let mut all = read_all(&found)?;
        all.retain(|r| task_id.is_none_or(|t| r.task_id == t));
        if let Some(path) = &path {
            all.retain(|r| r.paths.iter().any(|p| overlap(p, path).is_some()));
        }
        Ok(all)
    }
}
