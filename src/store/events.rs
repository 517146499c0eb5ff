//! The event log: appended in the same transaction as the change it records.

use sqlx::{SqliteConnection, SqliteExecutor};

use crate::domain::event::NewEvent;
use crate::domain::{Event, Timestamp};

use super::{Store, StoreError, StoreResult};

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    kind: String,
    task_id: Option<i64>,
    actor: Option<String>,
    data: String,
    created_at: i64,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(row: EventRow) -> StoreResult<Event> {
        Ok(Event {
            id: row.id,
            kind: row.kind,
            task_id: row.task_id,
            actor: row.actor,
            data: serde_json::from_str(&row.data)
                .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
            at: Timestamp(row.created_at),
        })
    }
}

/// Appends events inside the caller's transaction.
pub(super) async fn insert(
    tx: &mut SqliteConnection,
    now: Timestamp,
    events: Vec<NewEvent>,
) -> StoreResult<Vec<Event>> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let data = event.data.to_string();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (kind, task_id, actor, data, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(event.kind)
        .bind(event.task_id)
        .bind(&event.actor)
        .bind(&data)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await?;
        out.push(event.recorded(id, now));
    }
    Ok(out)
}

async fn select(executor: impl SqliteExecutor<'_>, sql: &str, a: i64, limit: i64) -> StoreResult<Vec<Event>> {
    let rows: Vec<EventRow> = sqlx::query_as(sql)
        .bind(a)
        .bind(limit)
        .fetch_all(executor)
        .await?;
    rows.into_iter().map(Event::try_from).collect()
}

impl Store {
    /// Events with id greater than `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
        select(
            &self.reader,
            "SELECT id, kind, task_id, actor, data, created_at FROM events WHERE id > ? ORDER BY id LIMIT ?",
            after,
            limit,
        )
        .await
    }

    /// Events of the notification trigger kinds with id greater than `after`, oldest first, and
    /// the id the scan reached: the last event returned when `limit` cut it short, else the newest
    /// event of the log. Both come from one snapshot, so nothing between them is skipped.
    pub async fn trigger_events_after(&self, after: i64, limit: i64) -> StoreResult<(Vec<Event>, i64)> {
        let mut tx = self.reader.begin().await?;
        let kinds = serde_json::to_string(&crate::domain::notification::TRIGGER_EVENTS)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT id, kind, task_id, actor, data, created_at FROM events \
             WHERE id > ?1 AND kind IN (SELECT value FROM json_each(?2)) ORDER BY id LIMIT ?3",
        )
        .bind(after)
        .bind(&kinds)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let reached = if rows.len() as i64 >= limit {
            rows.last().map_or(after, |r| r.id)
        } else {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM events")
                .fetch_one(&mut *tx)
                .await?
                .unwrap_or(after)
                .max(after)
        };
        tx.commit().await?;
        let events = rows
            .into_iter()
            .map(Event::try_from)
            .collect::<StoreResult<_>>()?;
        Ok((events, reached))
    }

    /// The most recent events of one task, oldest first.
    pub async fn task_events(&self, task_id: i64, limit: i64) -> StoreResult<Vec<Event>> {
        let mut events = select(
            &self.reader,
            "SELECT id, kind, task_id, actor, data, created_at FROM events WHERE task_id = ? ORDER BY id DESC LIMIT ?",
            task_id,
            limit,
        )
        .await?;
        events.reverse();
        Ok(events)
    }

    /// The id of the newest event (0 when there is none).
    pub async fn last_event_id(&self) -> StoreResult<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(id.unwrap_or(0))
    }
}
