//! The webhook outbox on PostgreSQL: deliveries queued from the event log with the cursor
//! locked and moved in the same transaction, their attempts, and their listing. Several servers
//! may share the outbox: due deliveries are taken for sending (`FOR UPDATE SKIP LOCKED`, their
//! next attempt moved past the time sending takes), so no two servers send the same one.

use std::collections::HashMap;

use sqlx::Row;

use crate::domain::webhook::{Delivery, DeliveryStatus, Hook};
use crate::domain::Timestamp;
use crate::store::{StoreResult, Webhooks};

use super::rows::{delivery, event, DELIVERY_COLUMNS, EVENT_COLUMNS};
use super::Postgres;

/// How long deliveries taken for sending are left to the server that took them: a batch is
/// sent at once, each attempt within a few seconds. Should that server stop before recording
/// the attempts, another one sends them once this time has passed (and the same node at once
/// when it starts again).
const SENDING_MS: i64 = 5 * 60 * 1_000;

#[async_trait::async_trait]
impl Webhooks for Postgres {
    async fn queue_webhook_deliveries(&self, hooks: &[Hook], limit: i64) -> StoreResult<usize> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        // Locked until this change commits: another server queueing at once waits, then reads
        // the cursor this one moved, so no event is queued twice.
        let cursor: i64 =
            sqlx::query_scalar("SELECT last_event_id FROM webhook_cursor WHERE id = 1 FOR UPDATE")
                .fetch_one(tx.db())
                .await?;
        if hooks.is_empty() {
            // Nothing to deliver: keep the cursor at the end, so a webhook configured later
            // does not replay the past.
            sqlx::query(
                "UPDATE webhook_cursor SET last_event_id = (SELECT COALESCE(MAX(id), 0) FROM events) \
                 WHERE id = 1 AND last_event_id < (SELECT COALESCE(MAX(id), 0) FROM events)",
            )
            .execute(tx.db())
            .await?;
            return self.commit(tx, 0).await;
        }
        let batch = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(cursor)
        .bind(limit)
        .fetch_all(tx.db())
        .await?
        .iter()
        .map(event)
        .collect::<StoreResult<Vec<_>>>()?;
        let task_ids: Vec<i64> = batch.iter().filter_map(|e| e.task_id).collect();
        let projects: HashMap<i64, String> = if task_ids.is_empty() {
            HashMap::new()
        } else {
            sqlx::query("SELECT id, project FROM tasks WHERE id = ANY($1)")
                .bind(&task_ids)
                .fetch_all(tx.db())
                .await?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?
        };
        let (mut names, mut urls, mut secrets, mut event_ids, mut kinds, mut bodies) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for event in &batch {
            let project = event.task_id.and_then(|id| projects.get(&id)).map(String::as_str);
            for hook in hooks.iter().filter(|h| h.takes(event, project)) {
                names.push(hook.name.clone());
                urls.push(hook.url.clone());
                secrets.push(hook.secret_env.clone());
                event_ids.push(event.id);
                kinds.push(event.kind());
                bodies.push(hook.body(event));
            }
        }
        if !names.is_empty() {
            sqlx::query(
                "INSERT INTO webhook_deliveries \
                 (webhook, url, secret_env, event_id, kind, body, next_attempt_at, created_at) \
                 SELECT webhook, url, secret_env, event_id, kind, body, $7, $7 \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[]) \
                     WITH ORDINALITY AS d(webhook, url, secret_env, event_id, kind, body, n) ORDER BY n \
                 ON CONFLICT (webhook, event_id) DO NOTHING",
            )
            .bind(&names)
            .bind(&urls)
            .bind(&secrets)
            .bind(&event_ids)
            .bind(&kinds)
            .bind(&bodies)
            .bind(now)
            .execute(tx.db())
            .await?;
        }
        if let Some(last) = batch.last() {
            sqlx::query("UPDATE webhook_cursor SET last_event_id = $1 WHERE id = 1")
                .bind(last.id)
                .execute(tx.db())
                .await?;
        }
        let read = batch.len();
        self.commit(tx, read).await
    }

    async fn due_webhooks(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT webhook FROM webhook_deliveries \
             WHERE status = 'queued' AND next_attempt_at <= $1 ORDER BY webhook",
        )
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes the due deliveries for sending: rows another server is taking are skipped, and
    /// those taken are not due again until `SENDING_MS` from now (their attempt, recorded
    /// with [`Webhooks::webhook_attempted`], sets when they are due next). They are answered as
    /// they were when due.
    async fn due_webhook_deliveries(
        &self,
        webhook: &str,
        now: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let mut tx = self.begin().await?;
        let sending_until = now.millis().max(tx.now.millis()).saturating_add(SENDING_MS);
        let mut taken = sqlx::query(
            "WITH due AS ( \
                 SELECT id, next_attempt_at FROM webhook_deliveries \
                 WHERE status = 'queued' AND next_attempt_at <= $1 AND webhook = $3 \
                 ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE webhook_deliveries d SET next_attempt_at = $4, taken_by = $5 FROM due WHERE d.id = due.id \
             RETURNING d.id, d.webhook, d.url, d.event_id, d.kind, d.status, d.attempts, d.last_status, \
                 d.last_error, d.created_at, due.next_attempt_at, d.delivered_at, d.secret_env, d.body",
        )
        .bind(now.millis())
        .bind(limit)
        .bind(webhook)
        .bind(sending_until)
        .bind(&self.options.node)
        .fetch_all(tx.db())
        .await?
        .iter()
        .map(delivery)
        .collect::<StoreResult<Vec<_>>>()?;
        taken.sort_by_key(|d| (d.next_attempt_at, d.id));
        self.commit(tx, taken).await
    }

    async fn next_webhook_due(&self) -> StoreResult<Option<Timestamp>> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'queued'")
                .fetch_one(&self.pool)
                .await?;
        Ok(at.map(Timestamp))
    }

    /// Records the attempt on a delivery still queued (one another server has since recorded
    /// as over is left as it is).
    async fn webhook_attempted(
        &self,
        id: i64,
        outcome: DeliveryStatus,
        answer: Option<u16>,
        error: Option<String>,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, last_status = $3, \
             last_error = $4, next_attempt_at = COALESCE($5::bigint, next_attempt_at), taken_by = NULL, \
             delivered_at = CASE WHEN $2 = 'delivered' THEN $6::bigint END \
             WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .bind(outcome.as_str())
        .bind(answer.map(i64::from))
        .bind(error)
        .bind(retry_at.map(Timestamp::millis))
        .bind(now)
        .execute(tx.db())
        .await?;
        self.commit(tx, ()).await
    }

    async fn list_webhook_deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE $1::text IS NULL OR status = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(status.map(DeliveryStatus::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(delivery)
        .collect()
    }
}
