//! The event log on SQLite: appended by the writer in the same savepoint as each change, read
//! back for SSE, the notifier and task pages.

use rusqlite::{params, Connection};

use crate::domain::event::{NewEvent, PEOPLE_KINDS};
use crate::domain::{Event, Timestamp};
use crate::store::{EventLog, StoreResult};

use super::rows::{self, to_json, EVENT_COLUMNS};
use super::Sqlite;

pub(super) fn events(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Vec<Event>> {
    let mut statement = conn.prepare_cached(sql)?;
    let found = statement
        .query_map(params, rows::event)?
        .collect::<Result<Vec<_>, _>>()?;
    found.into_iter().collect()
}

/// Appends `events` inside the writer's transaction; returns them as recorded.
pub(super) fn insert_events(
    conn: &Connection,
    now: Timestamp,
    new: Vec<NewEvent>,
) -> StoreResult<Vec<Event>> {
    // The id is the new rowid: `RETURNING` would cost a temporary table per insert.
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (kind, task_id, actor, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut out = Vec::with_capacity(new.len());
    for event in new {
        let (kind, data) = event.change.parts();
        insert.execute(params![
            kind,
            event.task_id,
            event.actor,
            to_json(&data),
            now.millis()
        ])?;
        out.push(event.recorded(conn.last_insert_rowid(), now));
    }
    Ok(out)
}

#[async_trait::async_trait]
impl EventLog for Sqlite {
    async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
        self.read(move |conn| {
            events(
                conn,
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"),
                params![after, limit],
            )
        })
        .await
    }

    async fn people_events_after(&self, after: i64, limit: i64) -> StoreResult<(Vec<Event>, i64)> {
        self.read(move |conn| {
            let found = events(
                conn,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 AND kind IN (?2, ?3, ?4, ?5) \
                     ORDER BY id LIMIT ?6"
                ),
                params![
                    after,
                    PEOPLE_KINDS[0],
                    PEOPLE_KINDS[1],
                    PEOPLE_KINDS[2],
                    PEOPLE_KINDS[3],
                    limit
                ],
            )?;
            // The read runs in one snapshot, so the newest id belongs to the same log state.
            let reached = if found.len() as i64 >= limit {
                found.last().map_or(after, |e| e.id)
            } else {
                conn.query_row("SELECT MAX(id) FROM events", [], |row| {
                    row.get::<_, Option<i64>>(0)
                })?
                .unwrap_or(after)
                .max(after)
            };
            Ok((found, reached))
        })
        .await
    }

    async fn task_events(&self, task_id: i64, limit: i64) -> StoreResult<Vec<Event>> {
        self.read(move |conn| {
            let mut found = events(
                conn,
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE task_id = ?1 ORDER BY id DESC LIMIT ?2"),
                params![task_id, limit],
            )?;
            found.reverse();
            Ok(found)
        })
        .await
    }

    async fn last_event_id(&self) -> StoreResult<i64> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT MAX(id) FROM events", [], |row| {
                    row.get::<_, Option<i64>>(0)
                })?
                .unwrap_or(0))
        })
        .await
    }

    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |tx| {
            // Webhook deliveries that are over go with the events they carried.
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE status <> 'queued' AND created_at < ?1",
                [before.millis()],
            )?;
            Ok(tx.execute("DELETE FROM events WHERE created_at < ?1", [before.millis()])? as u64)
        })
        .await
    }
}
