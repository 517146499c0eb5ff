//! The outbox on PostgreSQL: notifications queued from the event log under a cursor locked and
//! moved in the same change, each sending attempt, and the one-time take and decline links
//! (spent by one conditional update in the same change as what they do). Several servers may
//! share the outbox: due notifications are taken for sending (`FOR UPDATE SKIP LOCKED`, their
//! next attempt moved past the time sending takes), so no two servers send the same one.

use std::time::Duration;

use sqlx::PgConnection;

use crate::domain::{
    Change, LinkAction, NewEvent, NewNotification, Notification, NotificationStatus, Principal, Reason,
    Routed, Status, Timestamp,
};
use crate::store::{
    Claimed, NotificationFilter, NotificationPage, Outbox, Outgoing, StoreError, StoreResult,
};

use super::lifecycle::{check_active, claim_in, unblock_in};
use super::rows::{outgoing, NOTIFICATION_COLUMNS};
use super::tx::Tx;
use super::Postgres;
use crate::store::announce::Announce;

/// How long notifications taken for sending are left to the server that took them: a batch is
/// sent one after another. Should that server stop before recording the attempts, another one
/// sends them once this time has passed (and the same node at once when it starts again).
const SENDING_MS: i64 = 15 * 60 * 1_000;

/// Notification `id` with its bodies; not found is a refusal.
async fn fetch(conn: &mut PgConnection, id: i64) -> StoreResult<Outgoing> {
    let row = sqlx::query(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::not_found(format!("notification #{id}")))?;
    outgoing(&row)
}

/// Queues `n` unless its dedupe key is queued already; true when it is new.
async fn insert(tx: &mut Tx, n: &NewNotification) -> StoreResult<bool> {
    let now = tx.now.millis();
    let (text, html) = n.body.clone().unzip();
    let added = sqlx::query(
        "INSERT INTO notifications (task_id, human, to_addr, subject, reason, dedupe_key, \
         next_attempt_at, body_text, body_html, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $7) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(n.task_id)
    .bind(&n.human)
    .bind(&n.to)
    .bind(&n.subject)
    .bind(n.reason.as_str())
    .bind(&n.dedupe_key)
    .bind(now)
    .bind(text)
    .bind(html)
    .execute(tx.db())
    .await?
    .rows_affected();
    Ok(added > 0)
}

/// Spends a link's notification, once (one conditional update: of two clicks at once, one
/// wins); the caller's change undoes it if the action fails.
async fn use_link(tx: &mut Tx, id: i64, action: LinkAction) -> StoreResult<Notification> {
    let now = tx.now.millis();
    let used = sqlx::query(&format!(
        "UPDATE notifications SET action = $2, acted_at = $3 WHERE id = $1 AND acted_at IS NULL \
         RETURNING {NOTIFICATION_COLUMNS}"
    ))
    .bind(id)
    .bind(action.as_str())
    .bind(now)
    .fetch_optional(tx.db())
    .await?;
    if let Some(row) = used {
        return Ok(outgoing(&row)?.notification);
    }
    let n = fetch(tx.db(), id).await?.notification;
    let what = n.action.map(|a| a.as_str()).unwrap_or("used");
    Err(StoreError::conflict(format!(
        "this link was already used ({what}, {})",
        n.acted_at.map(Timestamp::to_rfc3339).unwrap_or_default()
    )))
}

/// Records one sending attempt; refused unless the notification is queued.
async fn attempt_done(
    tx: &mut Tx,
    id: i64,
    status: &str,
    error: Option<&str>,
    next_at: Timestamp,
) -> StoreResult<Notification> {
    let now = tx.now.millis();
    let done = sqlx::query(&format!(
        "UPDATE notifications SET status = $2, attempts = attempts + 1, last_error = COALESCE($3, last_error), \
         next_attempt_at = $4, taken_by = NULL, sent_at = CASE WHEN $2 = 'sent' THEN $5::bigint ELSE sent_at END \
         WHERE id = $1 AND status = 'queued' RETURNING {NOTIFICATION_COLUMNS}"
    ))
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(next_at.millis())
    .bind(now)
    .fetch_optional(tx.db())
    .await?
    .ok_or_else(|| StoreError::conflict(format!("notification #{id} is not queued")))?;
    Ok(outgoing(&done)?.notification)
}

/// The status of task `task_id`, its row locked until the change ends.
async fn lock_task_status(tx: &mut Tx, task_id: i64) -> StoreResult<Status> {
    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1 FOR UPDATE")
        .bind(task_id)
        .fetch_optional(tx.db())
        .await?
        .ok_or_else(|| StoreError::not_found(format!("task #{task_id}")))?;
    status.parse().map_err(StoreError::Corrupt)
}

#[async_trait::async_trait]
impl Outbox for Postgres {
    async fn notify_cursor(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT last_event_id FROM notify_cursor WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Queues `items` and moves the cursor. The cursor is locked first: when another server
    /// already moved it to `cursor` or past it, the events these items came from were turned
    /// into notifications there, and nothing is queued again.
    async fn queue_notifications(
        &self,
        cursor: Option<i64>,
        items: &[NewNotification],
    ) -> StoreResult<usize> {
        let mut tx = self.begin().await?;
        if let Some(cursor) = cursor {
            let reached: i64 =
                sqlx::query_scalar("SELECT last_event_id FROM notify_cursor WHERE id = 1 FOR UPDATE")
                    .fetch_one(tx.db())
                    .await?;
            if reached >= cursor {
                return self.commit(tx, 0).await;
            }
        }
        let mut queued = 0;
        for n in items {
            queued += usize::from(insert(&mut tx, n).await?);
        }
        if let Some(cursor) = cursor {
            sqlx::query("UPDATE notify_cursor SET last_event_id = GREATEST(last_event_id, $1) WHERE id = 1")
                .bind(cursor)
                .execute(tx.db())
                .await?;
        }
        self.commit(tx, queued)
            .await
            .inspect(|n| self.options.telemetry.notifications("queued", *n as u64))
    }

    /// Takes the due notifications for sending: rows another server is taking are skipped, and
    /// those taken are not due again until `SENDING_MS` from now (their attempt, once
    /// recorded, sets when they are due next). They are answered as they were when due.
    async fn due_notifications(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<Outgoing>> {
        let mut tx = self.begin().await?;
        let sending_until = now.millis().max(tx.now.millis()).saturating_add(SENDING_MS);
        let mut taken = sqlx::query(
            "WITH due AS ( \
                 SELECT id, next_attempt_at FROM notifications \
                 WHERE status = 'queued' AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE notifications n SET next_attempt_at = $3, taken_by = $4 FROM due WHERE n.id = due.id \
             RETURNING n.id, n.task_id, n.human, n.to_addr, n.subject, n.reason, n.status, n.attempts, \
                 n.last_error, due.next_attempt_at, n.body_text, n.body_html, n.action, n.acted_at, \
                 n.created_at, n.sent_at",
        )
        .bind(now.millis())
        .bind(limit)
        .bind(sending_until)
        .bind(&self.options.node)
        .fetch_all(tx.db())
        .await?
        .iter()
        .map(outgoing)
        .collect::<StoreResult<Vec<_>>>()?;
        taken.sort_by_key(|o| (o.notification.next_attempt_at, o.notification.id));
        self.commit(tx, taken).await
    }

    async fn next_notification_due(&self) -> StoreResult<Option<Timestamp>> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'queued'")
                .fetch_one(&self.pool)
                .await?;
        Ok(at.map(Timestamp))
    }

    async fn notification_sent(&self, id: i64) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let now = tx.now;
        let n = attempt_done(&mut tx, id, "sent", None, now).await?;
        tx.event(NewEvent {
            task_id: n.task_id,
            actor: Some("loop:notify".into()),
            change: Change::NotificationSent {
                notification: id,
                to: n.to,
                reason: n.reason,
                attempts: n.attempts,
            },
        });
        self.commit(tx, ())
            .await
            .inspect(|()| self.options.telemetry.notifications("sent", 1))
    }

    async fn notification_attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let (status, at) = match retry_at {
            Some(at) => ("queued", at),
            None => ("failed", tx.now),
        };
        let n = attempt_done(&mut tx, id, status, Some(error), at).await?;
        if retry_at.is_none() {
            tx.event(NewEvent {
                task_id: n.task_id,
                actor: Some("loop:notify".into()),
                change: Change::NotificationFailed {
                    notification: id,
                    to: n.to,
                    reason: n.reason,
                    attempts: n.attempts,
                    error: error.to_string(),
                },
            });
        }
        self.commit(tx, ())
            .await
            .inspect(|_| self.options.telemetry.notifications("failed", 1))
    }

    async fn list_notifications(&self, filter: &NotificationFilter) -> StoreResult<NotificationPage> {
        let limit = filter.limit;
        let mut items = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE ($1::text IS NULL OR status = $1) \
             AND ($2::bigint IS NULL OR task_id = $2) AND ($3::bigint IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(filter.status.map(NotificationStatus::as_str))
        .bind(filter.task_id)
        .bind(filter.before_id)
        .bind(filter.limit + 1)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| outgoing(row).map(|o| o.notification))
        .collect::<StoreResult<Vec<Notification>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|n| n.id.to_string())
        } else {
            None
        };
        Ok(NotificationPage { items, next_cursor })
    }

    async fn notification(&self, id: i64) -> StoreResult<Notification> {
        let mut conn = self.conn().await?;
        Ok(fetch(&mut conn, id).await?.notification)
    }

    async fn declined_by(&self, task_id: i64) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT human FROM notifications WHERE task_id = $1 AND action = 'decline' ORDER BY acted_at, id",
        )
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn open_offer(&self, task_id: i64) -> StoreResult<Option<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, human FROM notifications WHERE task_id = $1 AND action IS NULL \
             AND reason IN ('routed', 'spawn_fallback', 'blocked') ORDER BY id DESC LIMIT 1",
        )
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn task_routing(&self, task_id: i64) -> StoreResult<(i64, Option<String>)> {
        sqlx::query_as("SELECT fence, routed_reason FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("task #{task_id}")))
    }

    async fn take_by_link(&self, id: i64, who: &Principal, lease: Duration) -> StoreResult<Claimed> {
        let mut tx = self.begin().await?;
        let n = use_link(&mut tx, id, LinkAction::Take).await?;
        let task_id = n
            .task_id
            .ok_or_else(|| StoreError::conflict("this email is not about one task"))?;
        // The agent's row before the task's, in the order claims and deactivations take them.
        check_active(&mut tx, who).await?;
        if lock_task_status(&mut tx, task_id).await? == Status::Blocked {
            unblock_in(&mut tx, task_id, who, Some("taken from an email".into())).await?;
        }
        let claimed = claim_in(&mut tx, task_id, who, lease, &self.options.human_kinds).await?;
        self.commit(tx, claimed).await
    }

    async fn decline_by_link(&self, id: i64, next: Option<&NewNotification>) -> StoreResult<Notification> {
        let mut tx = self.begin().await?;
        let n = use_link(&mut tx, id, LinkAction::Decline).await?;
        let task_id = n
            .task_id
            .ok_or_else(|| StoreError::conflict("this email is not about one task"))?;
        // Only work still waiting the way the email said can be passed on.
        let waiting = match n.reason {
            Reason::Routed | Reason::SpawnFallback => Status::Available,
            Reason::Blocked => Status::Blocked,
            other => {
                return Err(StoreError::conflict(format!(
                    "an email about a {} task offers nothing to decline",
                    other.as_str().replace('_', " ")
                )))
            }
        };
        let status = lock_task_status(&mut tx, task_id).await?;
        if status != waiting {
            return Err(StoreError::conflict(format!(
                "task #{task_id} has moved on since the email: it is {status} now"
            )));
        }
        let mut queued = false;
        let reason = match next {
            Some(next) => {
                queued = insert(&mut tx, next).await?;
                format!("declined by {}; offered to {}", n.human, next.human)
            }
            None => format!(
                "declined by {}; nobody else matches: waiting in the manual queue",
                n.human
            ),
        };
        // A blocked task keeps its routing: once unblocked it is routed afresh.
        if waiting == Status::Available {
            sqlx::query("UPDATE tasks SET routed_to = $2, routed_reason = $3 WHERE id = $1")
                .bind(task_id)
                .bind(Routed::Human.as_str())
                .bind(&reason)
                .execute(tx.db())
                .await?;
        }
        tx.event(NewEvent::task(
            task_id,
            &n.human,
            Change::TaskRouted {
                decision: Some(Routed::Human.as_str().to_string()),
                reason,
                fallback: false,
                declined: true,
                previous: None,
            },
        ));
        let declined = self.commit(tx, n).await?;
        if queued {
            self.options.telemetry.notifications("queued", 1);
        }
        if next.is_some() {
            self.bus.wake_outbox();
        }
        Ok(declined)
    }
}
