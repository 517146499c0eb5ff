//! Path reservations on SQLite. Rows hold live reservations only; one counts while its task is
//! held under its fence and the lease has not run out, and is deleted, with a
//! `reservation.released` event, in the change that ends its lease. Ending one wakes the
//! tasks whose declared paths it was keeping from claim-next.

use rusqlite::{params, Connection};

use crate::domain::lifecycle::check_hold;
use crate::domain::paths::{first_overlap, overlap};
use crate::domain::reservation::{clash, Clash, MAX_PATTERNS_PER_LEASE};
use crate::domain::{Change, InputError, NewEvent, Principal, Refused, Reservation, Task, Timestamp};
use crate::store::{Reservations, StoreError, StoreResult};

use super::engine::Tx;
use super::lifecycle::reap;
use super::rows::{self, json, to_json};
use super::{fetch_task, Sqlite};
use crate::store::announce::Announce;

/// The column list every reservation query selects (from `reservations r`), in [`read`]'s order;
/// a macro so the queries are literals (no string is built on the writer per completion).
macro_rules! columns {
    () => {
        "r.id, r.task_id, r.holder, r.fence, r.paths, r.exclusive, r.created_at"
    };
}

/// The reservations `sql` (selecting `columns!()` from `reservations r`) finds with `params`.
fn select(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Vec<Reservation>> {
    let found = conn
        .prepare_cached(sql)?
        .query_map(params, rows::reservation)?
        .collect::<Result<Vec<_>, _>>()?;
    found.into_iter().collect()
}

/// Every live reservation, oldest first.
pub(super) fn live(conn: &Connection, now: Timestamp) -> StoreResult<Vec<Reservation>> {
    select(
        conn,
        concat!(
            "SELECT ",
            columns!(),
            " FROM reservations r JOIN tasks t ON t.id = r.task_id \
             WHERE t.status = 'in_progress' AND t.fence = r.fence AND t.lease_expires_at > ?1 \
             ORDER BY r.id"
        ),
        [now.millis()],
    )
}

/// The tasks whose reservations never clash with task `id`'s: itself, its ancestors and its
/// descendants.
fn kin(conn: &Connection, id: i64) -> StoreResult<Vec<i64>> {
    Ok(conn
        .prepare_cached(
            "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT t.parent_id FROM tasks t JOIN up ON t.id = up.id \
                 WHERE t.parent_id IS NOT NULL), \
             down(id) AS (SELECT ?1 UNION SELECT t.id FROM tasks t JOIN down ON t.parent_id = down.id) \
             SELECT id FROM up UNION SELECT id FROM down",
        )?
        .query_map([id], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?)
}

/// The live reservation (of `live`) that task `id` reserving `paths` would clash with, if any;
/// its kin's never do (see `domain::reservation::clash`).
pub(super) fn clash_for(
    conn: &Connection,
    id: i64,
    paths: &[String],
    exclusive: bool,
    live: &[Reservation],
) -> StoreResult<Option<Clash>> {
    // Kin are looked up only when something is in the way.
    if clash(&[id], paths, exclusive, live).is_none() {
        return Ok(None);
    }
    Ok(clash(&kin(conn, id)?, paths, exclusive, live))
}

/// True when any reservation row exists (live or not yet ended): claim-next looks closer then.
pub(super) fn any(conn: &Connection) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM reservations)")?
        .query_row([], |row| row.get(0))?)
}

/// Reserves `paths` for `task`'s current lease inside the caller's change; refused when a live
/// reservation of another lease is in the way.
pub(super) fn reserve_in(
    tx: &mut Tx<'_>,
    task: &Task,
    actor: &str,
    paths: Vec<String>,
    exclusive: bool,
) -> StoreResult<Reservation> {
    let lease = task
        .lease
        .clone()
        .ok_or_else(|| StoreError::Corrupt(format!("task #{} is reserved without a lease", task.id)))?;
    let live = live(tx, tx.now)?;
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
    if let Some(clash) = clash_for(tx, task.id, &paths, exclusive, &live)? {
        return Err(StoreError::conflict(clash.message()));
    }
    let now = tx.now;
    tx.prepare_cached(
        "INSERT INTO reservations (task_id, fence, holder, paths, exclusive, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        task.id,
        lease.fence,
        lease.holder,
        to_json(&paths),
        exclusive,
        now.millis()
    ])?;
    let reservation = Reservation {
        id: tx.last_insert_rowid(),
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
pub(super) fn end_all(tx: &mut Tx<'_>, id: i64, actor: Option<&str>, reason: &str) -> StoreResult<()> {
    let ended = select(
        tx,
        concat!("SELECT ", columns!(), " FROM reservations r WHERE r.task_id = ?1"),
        [id],
    )?;
    end(tx, ended, actor, reason)
}

/// Ends the reservations `ended` inside the caller's change, each with an event by `actor`
/// saying `reason`; wakes the tasks they kept waiting.
fn end(tx: &mut Tx<'_>, ended: Vec<Reservation>, actor: Option<&str>, reason: &str) -> StoreResult<()> {
    let mut patterns = Vec::new();
    for r in ended {
        tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
            .execute([r.id])?;
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
    wake_declaring(tx, &patterns)
}

/// Available tasks with declared paths looked at when a reservation ends: the best ones, which
/// claim-next would hand out first; the cost of ending a reservation stays bounded however
/// many tasks declare paths.
const WAKE_SCAN: i64 = 256;

/// Wakes the best available tasks whose declared paths overlap `patterns`.
fn wake_declaring(tx: &mut Tx<'_>, patterns: &[String]) -> StoreResult<()> {
    let declaring = tx
        .prepare_cached(
            "SELECT id, paths FROM tasks INDEXED BY tasks_declaring_paths \
             WHERE status = 'available' AND paths <> '[]' ORDER BY priority, id LIMIT ?1",
        )?
        .query_map([WAKE_SCAN], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, paths) in declaring {
        let paths: Vec<String> = json("task paths", &paths)?;
        if first_overlap(&paths, patterns).is_some() {
            tx.ready(id);
        }
    }
    Ok(())
}

/// Claims reserve a task's declared paths: refused (`409`) when another lease holds one. Leases
/// that ran out are returned first, so their reservations are not in the way.
pub(super) fn check_declared(tx: &mut Tx<'_>, task: &Task) -> StoreResult<()> {
    if task.paths.is_empty() || !any(tx)? {
        return Ok(());
    }
    reap(tx, None)?;
    match clash_for(tx, task.id, &task.paths, true, &live(tx, tx.now)?)? {
        Some(clash) => Err(StoreError::conflict(format!(
            "task #{} cannot be claimed now: {}",
            task.id,
            clash.message()
        ))),
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl Reservations for Sqlite {
    async fn reserve(
        &self,
        id: i64,
        who: &Principal,
        fence: i64,
        paths: Vec<String>,
        exclusive: bool,
    ) -> StoreResult<Reservation> {
        let who = who.clone();
        self.write(move |tx| {
            // Every lease that ran out is returned first: its reservations are in nobody's way,
            // and a holder whose own lease ran out is told so.
            reap(tx, None)?;
            let task = fetch_task(tx, id)?;
            check_hold(&task, &who, fence)?;
            reserve_in(tx, &task, &who.name, paths, exclusive)
        })
        .await
    }

    async fn unreserve(
        &self,
        id: i64,
        reservation: i64,
        who: &Principal,
        fence: i64,
    ) -> StoreResult<Reservation> {
        let who = who.clone();
        self.write(move |tx| {
            let task = fetch_task(tx, id)?;
            check_hold(&task, &who, fence)?;
            let found = select(
                tx,
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM reservations r WHERE r.id = ?1 AND r.task_id = ?2 AND r.fence = ?3"
                ),
                params![reservation, id, fence],
            )?;
            let Some(r) = found.first().cloned() else {
                return Err(Refused::NotFound(format!("reservation {reservation} of task #{id}")).into());
            };
            end(tx, found, Some(&who.name), "released")?;
            Ok(r)
        })
        .await
    }

    async fn reservations(
        &self,
        path: Option<String>,
        task_id: Option<i64>,
    ) -> StoreResult<Vec<Reservation>> {
        self.read(move |conn| {
            let mut all = live(conn, Timestamp::now())?;
            all.retain(|r| task_id.is_none_or(|t| r.task_id == t));
            if let Some(path) = &path {
                all.retain(|r| r.paths.iter().any(|p| overlap(p, path).is_some()));
            }
            Ok(all)
        })
        .await
    }
}
