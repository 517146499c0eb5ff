//! The webhook outbox on SQLite: deliveries queued from the event log with the cursor moved in
//! the same transaction, their attempts, and their listing.

use rusqlite::{params, OptionalExtension};

use crate::domain::webhook::{Delivery, DeliveryStatus, Hook};
use crate::domain::Timestamp;
use crate::store::{StoreResult, Webhooks};

use super::events::events;
use super::rows::{self, DELIVERY_COLUMNS, EVENT_COLUMNS};
use super::Sqlite;

fn deliveries(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Delivery>> {
    let mut statement = conn.prepare_cached(sql)?;
    let found = statement
        .query_map(params, rows::delivery)?
        .collect::<Result<Vec<_>, _>>()?;
    found.into_iter().collect()
}

#[async_trait::async_trait]
impl Webhooks for Sqlite {
    async fn queue_webhook_deliveries(&self, hooks: &[Hook], limit: i64) -> StoreResult<usize> {
        let hooks = hooks.to_vec();
        self.write(move |tx| {
            let cursor: i64 = tx
                .prepare_cached("SELECT last_event_id FROM webhook_cursor WHERE id = 1")?
                .query_row([], |row| row.get(0))?;
            if hooks.is_empty() {
                // Nothing to deliver: keep the cursor at the end, so a webhook configured later
                // does not replay the past.
                tx.prepare_cached(
                    "UPDATE webhook_cursor SET last_event_id = (SELECT COALESCE(MAX(id), 0) FROM events) \
                     WHERE id = 1 AND last_event_id < (SELECT COALESCE(MAX(id), 0) FROM events)",
                )?
                .execute([])?;
                return Ok(0);
            }
            let batch = events(
                tx,
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"),
                params![cursor, limit],
            )?;
            for event in &batch {
                let project: Option<String> = match event.task_id {
                    Some(id) => tx
                        .prepare_cached("SELECT project FROM tasks WHERE id = ?1")?
                        .query_row([id], |row| row.get(0))
                        .optional()?,
                    None => None,
                };
                for hook in hooks.iter().filter(|h| h.takes(event, project.as_deref())) {
                    tx.prepare_cached(
                            "INSERT INTO webhook_deliveries \
                             (webhook, url, secret_env, event_id, kind, body, next_attempt_at, created_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT (webhook, event_id) DO NOTHING",
                        )?
                        .execute(params![
                            hook.name,
                            hook.url,
                            hook.secret_env,
                            event.id,
                            event.kind(),
                            hook.body(event),
                            tx.now.millis()
                        ])?;
                }
            }
            if let Some(last) = batch.last() {
                tx.prepare_cached("UPDATE webhook_cursor SET last_event_id = ?1 WHERE id = 1")?
                    .execute([last.id])?;
            }
            Ok(batch.len())
        })
        .await
    }

    async fn due_webhooks(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT DISTINCT webhook FROM webhook_deliveries \
                     WHERE status = 'queued' AND next_attempt_at <= ?1 ORDER BY webhook",
                )?
                .query_map([now.millis()], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    async fn due_webhook_deliveries(
        &self,
        webhook: &str,
        now: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let webhook = webhook.to_string();
        self.read(move |conn| {
            deliveries(
                conn,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE status = 'queued' AND next_attempt_at <= ?1 AND webhook = ?3 \
                     ORDER BY next_attempt_at, id LIMIT ?2"
                ),
                params![now.millis(), limit, webhook],
            )
        })
        .await
    }

    async fn next_webhook_due(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'queued'",
                )?
                .query_row([], |row| row.get::<_, Option<i64>>(0))?
                .map(Timestamp))
        })
        .await
    }

    async fn webhook_attempted(
        &self,
        id: i64,
        outcome: DeliveryStatus,
        answer: Option<u16>,
        error: Option<String>,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        self.write(move |tx| {
            let now = tx.now.millis();
            tx.prepare_cached(
                "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1, last_status = ?3, \
                 last_error = ?4, next_attempt_at = COALESCE(?5, next_attempt_at), \
                 delivered_at = CASE WHEN ?2 = 'delivered' THEN ?6 END WHERE id = ?1",
            )?
            .execute(params![
                id,
                outcome.as_str(),
                answer,
                error,
                retry_at.map(Timestamp::millis),
                now
            ])?;
            Ok(())
        })
        .await
    }

    async fn list_webhook_deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        self.read(move |conn| {
            deliveries(
                conn,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE ?1 IS NULL OR status = ?1 ORDER BY id DESC LIMIT ?2"
                ),
                params![status.map(DeliveryStatus::as_str), limit],
            )
        })
        .await
    }
}
