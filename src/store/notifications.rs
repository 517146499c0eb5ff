//! The outbox and the people behind it: queueing notifications (from the event log, under a
//! cursor), recording each sending attempt, and the one-time take and decline links.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::SqliteConnection;
use utoipa::ToSchema;

use crate::domain::event::NewEvent;
use crate::domain::{
    LinkAction, NewNotification, Notification, NotificationStatus, Principal, Reason, Role, Status, Task,
    Timestamp,
};

use super::leases::{unblock_in, Claimed};
use super::rows::{to_json, TaskRow, TASK_COLUMNS};
use super::{Store, StoreError, StoreResult, Wake};

const COLUMNS: &str = "id, task_id, human, to_addr, subject, reason, status, attempts, last_error, \
    next_attempt_at, body_text, body_html, action, acted_at, created_at, sent_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    task_id: Option<i64>,
    human: String,
    to_addr: String,
    subject: String,
    reason: String,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    next_attempt_at: i64,
    body_text: Option<String>,
    body_html: Option<String>,
    action: Option<String>,
    acted_at: Option<i64>,
    created_at: i64,
    sent_at: Option<i64>,
}

impl Row {
    fn into_outgoing(self) -> StoreResult<Outgoing> {
        let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("notification {what} {v:?}"));
        let status =
            NotificationStatus::parse(&self.status).ok_or_else(|| corrupt("status", &self.status))?;
        let notification = Notification {
            id: self.id,
            task_id: self.task_id,
            human: self.human,
            to: self.to_addr,
            subject: self.subject,
            reason: Reason::parse(&self.reason).ok_or_else(|| corrupt("reason", &self.reason))?,
            status,
            attempts: self.attempts,
            last_error: self.last_error,
            created_at: Timestamp(self.created_at),
            sent_at: self.sent_at.map(Timestamp),
            next_attempt_at: (status == NotificationStatus::Queued)
                .then_some(Timestamp(self.next_attempt_at)),
            action: match self.action.as_deref() {
                None => None,
                Some(a) => Some(LinkAction::parse(a).ok_or_else(|| corrupt("action", a))?),
            },
            acted_at: self.acted_at.map(Timestamp),
        };
        Ok(Outgoing {
            notification,
            body: self.body_text.zip(self.body_html),
        })
    }
}

/// A notification with its stored bodies (digests carry theirs; task emails are rendered when sent).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The row.
    pub notification: Notification,
    /// Text and HTML bodies, when rendered at queue time.
    pub body: Option<(String, String)>,
}

/// Filters for listing notifications.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    /// Only this status.
    pub status: Option<NotificationStatus>,
    /// Only about this task.
    pub task_id: Option<i64>,
    /// Page size.
    pub limit: i64,
    /// Ids below this (newest first paging).
    pub before_id: Option<i64>,
}

/// One page of notifications, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationPage {
    /// The notifications.
    pub items: Vec<Notification>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

async fn insert(tx: &mut SqliteConnection, n: &NewNotification, now: Timestamp) -> StoreResult<bool> {
    let (text, html) = n.body.clone().unzip();
    let done = sqlx::query(
        "INSERT INTO notifications (task_id, human, to_addr, subject, reason, dedupe_key, \
         next_attempt_at, body_text, body_html, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?7) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(n.task_id)
    .bind(&n.human)
    .bind(&n.to)
    .bind(&n.subject)
    .bind(n.reason.as_str())
    .bind(&n.dedupe_key)
    .bind(now.millis())
    .bind(text)
    .bind(html)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

async fn fetch(tx: &mut SqliteConnection, id: i64) -> StoreResult<Outgoing> {
    let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM notifications WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    row.ok_or_else(|| StoreError::NotFound(format!("notification #{id}")))?
        .into_outgoing()
}

/// Marks a link's notification as acted on, once; the caller's transaction rolls it back if
/// the action itself fails.
async fn use_link(
    tx: &mut SqliteConnection,
    id: i64,
    action: LinkAction,
    now: Timestamp,
) -> StoreResult<Notification> {
    let used =
        sqlx::query("UPDATE notifications SET action = ?2, acted_at = ?3 WHERE id = ?1 AND acted_at IS NULL")
            .bind(id)
            .bind(action.as_str())
            .bind(now.millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let n = fetch(tx, id).await?.notification;
    if used == 0 {
        let what = n.action.map(|a| a.as_str()).unwrap_or("used");
        return Err(StoreError::Conflict(format!(
            "this link was already used ({what}, {})",
            n.acted_at.map(Timestamp::to_rfc3339).unwrap_or_default()
        )));
    }
    Ok(n)
}

impl Store {
    /// Makes every configured person an agent of kind `human` (name → capabilities). Their
    /// bearer token is random and never shown: people act through signed links and the
    /// dashboard. A name taken by an agent that is not a person is refused.
    pub async fn sync_humans(&self, people: &[(String, Vec<String>)]) -> StoreResult<()> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        for (name, capabilities) in people {
            let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM agents WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            match kind.as_deref() {
                Some("human") => {
                    sqlx::query("UPDATE agents SET capabilities = ?2 WHERE name = ?1")
                        .bind(name)
                        .bind(to_json(capabilities))
                        .execute(&mut *tx)
                        .await?;
                }
                Some(other) => {
                    return Err(StoreError::Conflict(format!(
                        "the person {name:?} cannot be added: an agent of kind {other} has that name"
                    )))
                }
                None => {
                    sqlx::query(
                        "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at) \
                         VALUES (?1, 'human', ?2, 'agent', ?3, 'offline', ?4)",
                    )
                    .bind(name)
                    .bind(to_json(capabilities))
                    .bind(format!("person:{}", hex::encode(rand::random::<[u8; 32]>())))
                    .bind(now.millis())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit(self).await?;
        Ok(())
    }

    /// The person named `name`, as a principal.
    pub async fn person(&self, name: &str) -> StoreResult<Principal> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT id, capabilities FROM agents WHERE name = ? AND kind = 'human'")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?;
        let (id, capabilities) = row.ok_or_else(|| StoreError::NotFound(format!("person {name:?}")))?;
        Ok(Principal {
            agent_id: Some(id),
            name: name.to_string(),
            role: Role::Agent,
            kind: "human".into(),
            capabilities: serde_json::from_str(&capabilities)
                .map_err(|e| StoreError::Corrupt(format!("capabilities of {name}: {e}")))?,
            scope: None,
        })
    }

    /// A task's fence (claims so far) and the router's last reason, for notifications.
    pub async fn task_routing(&self, task_id: i64) -> StoreResult<(i64, Option<String>)> {
        sqlx::query_as("SELECT fence, routed_reason FROM tasks WHERE id = ?")
            .bind(task_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("task #{task_id}")))
    }

    /// Tasks that wait on people: routed to them and available, blocked, or failed since `since`.
    pub async fn tasks_for_people(&self, since: Timestamp, limit: i64) -> StoreResult<Vec<Task>> {
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE (status = 'available' AND routed_to = 'human') \
             OR status = 'blocked' OR (status = 'failed' AND updated_at >= ?1) \
             ORDER BY priority, id LIMIT ?2"
        ))
        .bind(since.millis())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Task::try_from).collect()
    }

    /// The last event already turned into notifications.
    pub async fn notify_cursor(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT last_event_id FROM notify_cursor WHERE id = 1")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    /// Queues `items` (a dedupe key already queued is skipped) and moves the event cursor to
    /// `cursor` when given, in one transaction. Returns how many were new.
    pub async fn queue_notifications(
        &self,
        cursor: Option<i64>,
        items: &[NewNotification],
    ) -> StoreResult<usize> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let mut queued = 0;
        for n in items {
            queued += usize::from(insert(&mut tx, n, now).await?);
        }
        if let Some(cursor) = cursor {
            sqlx::query("UPDATE notify_cursor SET last_event_id = MAX(last_event_id, ?) WHERE id = 1")
                .bind(cursor)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit(self).await?;
        Ok(queued)
    }

    /// Queued notifications due by `now`, oldest first.
    pub async fn due_notifications(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<Outgoing>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE status = 'queued' AND next_attempt_at <= ? \
             ORDER BY next_attempt_at, id LIMIT ?"
        ))
        .bind(now.millis())
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(Row::into_outgoing).collect()
    }

    /// When the next queued notification falls due, if any is queued.
    pub async fn next_notification_due(&self) -> StoreResult<Option<Timestamp>> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'queued'")
                .fetch_one(&self.reader)
                .await?;
        Ok(at.map(Timestamp))
    }

    /// Records a delivered notification.
    pub async fn notification_sent(&self, id: i64) -> StoreResult<()> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let n = self.attempt_done(&mut tx, id, "sent", None, now, now).await?;
        let event = NewEvent {
            kind: "notification.sent",
            task_id: n.task_id,
            actor: Some("loop:notify".into()),
            data: json!({"notification": id, "to": n.to, "reason": n.reason, "attempts": n.attempts}),
        };
        self.commit(tx, now, vec![event], Wake::default()).await
    }

    /// Records a failed attempt: retried at `retry_at`, or failed for good when `None`.
    pub async fn notification_attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let (status, at) = match retry_at {
            Some(at) => ("queued", at),
            None => ("failed", now),
        };
        let n = self
            .attempt_done(&mut tx, id, status, Some(error), at, now)
            .await?;
        let events = if retry_at.is_none() {
            vec![NewEvent {
                kind: "notification.failed",
                task_id: n.task_id,
                actor: Some("loop:notify".into()),
                data: json!({"notification": id, "to": n.to, "reason": n.reason,
                             "attempts": n.attempts, "error": error}),
            }]
        } else {
            Vec::new()
        };
        self.commit(tx, now, events, Wake::default()).await
    }

    async fn attempt_done(
        &self,
        tx: &mut SqliteConnection,
        id: i64,
        status: &str,
        error: Option<&str>,
        next_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Notification> {
        let done = sqlx::query(
            "UPDATE notifications SET status = ?2, attempts = attempts + 1, last_error = COALESCE(?3, last_error), \
             next_attempt_at = ?4, sent_at = CASE WHEN ?2 = 'sent' THEN ?5 ELSE sent_at END \
             WHERE id = ?1 AND status = 'queued'",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(next_at.millis())
        .bind(now.millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::Conflict(format!("notification #{id} is not queued")));
        }
        Ok(fetch(tx, id).await?.notification)
    }

    /// Notifications, newest first.
    pub async fn list_notifications(&self, filter: &NotificationFilter) -> StoreResult<NotificationPage> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE (?1 IS NULL OR status = ?1) \
             AND (?2 IS NULL OR task_id = ?2) AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
        ))
        .bind(filter.status.map(NotificationStatus::as_str))
        .bind(filter.task_id)
        .bind(filter.before_id)
        .bind(filter.limit + 1)
        .fetch_all(&self.reader)
        .await?;
        let mut items = rows
            .into_iter()
            .map(|r| r.into_outgoing().map(|o| o.notification))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > filter.limit {
            items.truncate(filter.limit as usize);
            items.last().map(|n| n.id.to_string())
        } else {
            None
        };
        Ok(NotificationPage { items, next_cursor })
    }

    /// One notification.
    pub async fn notification(&self, id: i64) -> StoreResult<Notification> {
        let mut conn = self.reader.acquire().await?;
        Ok(fetch(&mut conn, id).await?.notification)
    }

    /// The people who declined task `task_id`, in the order they did.
    pub async fn declined_by(&self, task_id: i64) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT human FROM notifications WHERE task_id = ? AND action = 'decline' ORDER BY acted_at, id",
        )
        .bind(task_id)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Follows a take link: the task becomes `who`'s (a blocked task is unblocked first), and
    /// the link is spent — all in one transaction, so a refused claim leaves the link usable.
    pub async fn take_by_link(&self, id: i64, who: &Principal, lease: Duration) -> StoreResult<Claimed> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let n = use_link(&mut tx, id, LinkAction::Take, now).await?;
        let task_id = n
            .task_id
            .ok_or_else(|| StoreError::Conflict("this email is not about one task".into()))?;
        let mut events = Vec::new();
        let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?")
            .bind(task_id)
            .fetch_one(&mut *tx)
            .await?;
        if status == Status::Blocked.as_str() {
            let (_, event) =
                unblock_in(&mut tx, task_id, who, Some("taken from an email".into()), now).await?;
            events.push(event);
        }
        let (claim, more, ready) = self.claim_in(&mut tx, task_id, who, lease, now).await?;
        events.extend(more);
        self.commit(tx, now, events, super::Wake::tasks(ready)).await?;
        Ok(claim)
    }

    /// Follows a decline link: the link is spent, and the task is offered to `next` or, when
    /// nobody is left, recorded as waiting in the manual queue.
    pub async fn decline_by_link(
        &self,
        id: i64,
        next: Option<&NewNotification>,
    ) -> StoreResult<Notification> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let n = use_link(&mut tx, id, LinkAction::Decline, now).await?;
        let task_id = n
            .task_id
            .ok_or_else(|| StoreError::Conflict("this email is not about one task".into()))?;
        // Only work still waiting the way the email said can be passed on.
        let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?")
            .bind(task_id)
            .fetch_one(&mut *tx)
            .await?;
        let waiting = match n.reason {
            Reason::Routed | Reason::SpawnFallback => Status::Available,
            Reason::Blocked => Status::Blocked,
            other => {
                return Err(StoreError::Conflict(format!(
                    "an email about a {} task offers nothing to decline",
                    other.as_str().replace('_', " ")
                )))
            }
        };
        if status != waiting.as_str() {
            return Err(StoreError::Conflict(format!(
                "task #{task_id} has moved on since the email: it is {status} now"
            )));
        }
        let reason = match next {
            Some(next) => {
                insert(&mut tx, next, now).await?;
                format!("declined by {}; offered to {}", n.human, next.human)
            }
            None => format!(
                "declined by {}; nobody else matches: waiting in the manual queue",
                n.human
            ),
        };
        // A blocked task keeps its routing: once unblocked it is routed afresh.
        if waiting == Status::Available {
            sqlx::query("UPDATE tasks SET routed_to = 'human', routed_reason = ?2 WHERE id = ?1")
                .bind(task_id)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
        }
        let event = NewEvent::task(
            "task.routed",
            task_id,
            &n.human,
            json!({"decision": "human", "reason": reason, "declined": true}),
        );
        self.commit(tx, now, vec![event], Wake::default()).await?;
        if next.is_some() {
            self.wake_outbox();
        }
        Ok(n)
    }
}
