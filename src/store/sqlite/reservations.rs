//! Path reservations on SQLite. Rows hold live reservations only; one counts while its task is
//! held under its fence and the lease has not run out, and is deleted, with a
//! `reservation.released` event, in the change that ends its lease. Ending one wakes the
//! tasks whose declared paths it was keeping from claim-next.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::lifecycle::check_hold;
use crate::domain::paths::{first_overlap, overlap};
use crate::domain::reservation::clash;
use crate::domain::{Change, NewEvent, Principal, Refused, Reservation, Task, Timestamp};
use crate::store::{Reservations, StoreError, StoreResult};

use super::engine::Tx;
use super::lifecycle::reap;
use super::rows::{json, to_json};
use super::{fetch_task, Sqlite};

const COLUMNS: &str = "r.id, r.task_id, r.holder, r.fence, r.paths, r.exclusive, r.created_at";

fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Reservation, String)> {
    Ok((
        Reservation {
            id: row.get(0)?,
            task_id: row.get(1)?,
            holder: row.get(2)?,
            fence: row.get(3)?,
            paths: Vec::new(),
            exclusive: row.get(5)?,
            created_at: Timestamp(row.get(6)?),
        },
        row.get(4)?,
    ))
}

/// Every live reservation, oldest first.
pub(super) fn live(conn: &Connection, now: Timestamp) -> StoreResult<Vec<Reservation>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM reservations r JOIN tasks t ON t.id = r.task_id \
             WHERE t.status = 'in_progress' AND t.fence = r.fence AND t.lease_expires_at > ?1 \
             ORDER BY r.id"
        ))?
        .query_map([now.millis()], read)?
        .collect::<Result<Vec<_>, _>>()?;
    found
        .into_iter()
        .map(|(mut r, paths)| {
            r.paths = json("reservation paths", &paths)?;
            Ok(r)
        })
        .collect()
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
    if let Some(clash) = clash(task.id, &paths, exclusive, &live(tx, tx.now)?) {
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
    let ended = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM reservations r WHERE r.task_id = ?1"
        ))?
        .query_map([id], read)?
        .collect::<Result<Vec<_>, _>>()?;
    if ended.is_empty() {
        return Ok(());
    }
    tx.prepare_cached("DELETE FROM reservations WHERE task_id = ?1")?
        .execute([id])?;
    let mut patterns = Vec::new();
    for (r, paths) in ended {
        let paths: Vec<String> = json("reservation paths", &paths)?;
        patterns.extend(paths.iter().cloned());
        tx.event(NewEvent {
            task_id: Some(id),
            actor: actor.map(str::to_string),
            change: Change::ReservationReleased {
                reservation: r.id,
                holder: r.holder,
                fence: r.fence,
                paths,
                reason: reason.to_string(),
            },
        });
    }
    wake_declaring(tx, &patterns)
}

/// Wakes the available tasks whose declared paths overlap `patterns`.
fn wake_declaring(tx: &mut Tx<'_>, patterns: &[String]) -> StoreResult<()> {
    let declaring = tx
        .prepare_cached("SELECT id, paths FROM tasks WHERE status = 'available' AND paths <> '[]'")?
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, paths) in declaring {
        let paths: Vec<String> = json("task paths", &paths)?;
        if first_overlap(&paths, patterns).is_some() {
            tx.ready(id);
        }
    }
    Ok(())
}

/// Claims reserve a task's declared paths: refused (`409`) when another lease holds one.
pub(super) fn check_declared(tx: &Tx<'_>, task: &Task) -> StoreResult<()> {
    if task.paths.is_empty() || !any(tx)? {
        return Ok(());
    }
    match clash(task.id, &task.paths, true, &live(tx, tx.now)?) {
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
            reap(tx, Some(id))?;
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
            let found = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM reservations r WHERE r.id = ?1 AND r.task_id = ?2 AND r.fence = ?3"
                ))?
                .query_row(params![reservation, id, fence], read)
                .optional()?;
            let Some((mut r, paths)) = found else {
                return Err(Refused::NotFound(format!("reservation {reservation} of task #{id}")).into());
            };
            r.paths = json("reservation paths", &paths)?;
            tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                .execute([reservation])?;
            tx.event(NewEvent::task(
                id,
                &who.name,
                Change::ReservationReleased {
                    reservation,
                    holder: r.holder.clone(),
                    fence,
                    paths: r.paths.clone(),
                    reason: "released".into(),
                },
            ));
            wake_declaring(tx, &r.paths)?;
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
