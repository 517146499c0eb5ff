//! The outbox on SQLite: notifications queued from the event log under a cursor that moves in
//! the same change, each sending attempt, and the one-time take and decline links (spent in the
//! same change as what they do).

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::{
    Change, LinkAction, NewEvent, NewNotification, Notification, NotificationStatus, Principal, Reason,
    Routed, Status, Timestamp,
};
use crate::store::{
    Claimed, NotificationFilter, NotificationPage, Outbox, Outgoing, StoreError, StoreResult,
};

use super::engine::Tx;
use super::lifecycle::{claim_in, unblock_in};
use super::rows::{self, NOTIFICATION_COLUMNS};
use super::Sqlite;
use crate::store::announce::Announce;

fn select(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Vec<Outgoing>> {
    let found = conn
        .prepare_cached(sql)?
        .query_map(params, rows::outgoing)?
        .collect::<Result<Vec<_>, _>>()?;
    found.into_iter().collect()
}

fn fetch(conn: &Connection, id: i64) -> StoreResult<Outgoing> {
    select(
        conn,
        &format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?1"),
        [id],
    )?
    .pop()
    .ok_or_else(|| StoreError::not_found(format!("notification #{id}")))
}

/// Queues `n` unless its dedupe key is queued already; true when it is new.
fn insert(tx: &Tx<'_>, n: &NewNotification) -> StoreResult<bool> {
    let (text, html) = n.body.clone().unzip();
    let added = tx
        .prepare_cached(
            "INSERT INTO notifications (task_id, human, to_addr, subject, reason, dedupe_key, \
             next_attempt_at, body_text, body_html, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?7) ON CONFLICT (dedupe_key) DO NOTHING",
        )?
        .execute(params![
            n.task_id,
            n.human,
            n.to,
            n.subject,
            n.reason.as_str(),
            n.dedupe_key,
            tx.now.millis(),
            text,
            html
        ])?;
    Ok(added > 0)
}

/// Spends a link's notification, once; the caller's change undoes it if the action fails.
fn use_link(tx: &Tx<'_>, id: i64, action: LinkAction) -> StoreResult<Notification> {
    let used = tx
        .prepare_cached(
            "UPDATE notifications SET action = ?2, acted_at = ?3 WHERE id = ?1 AND acted_at IS NULL",
        )?
        .execute(params![id, action.as_str(), tx.now.millis()])?;
    let n = fetch(tx, id)?.notification;
    if used == 0 {
        let what = n.action.map(|a| a.as_str()).unwrap_or("used");
        return Err(StoreError::conflict(format!(
            "this link was already used ({what}, {})",
            n.acted_at.map(Timestamp::to_rfc3339).unwrap_or_default()
        )));
    }
    Ok(n)
}

/// Records one sending attempt; refused unless the notification is queued.
fn attempt_done(
    tx: &Tx<'_>,
    id: i64,
    status: &str,
    error: Option<&str>,
    next_at: Timestamp,
) -> StoreResult<Notification> {
    let done = tx
        .prepare_cached(
            "UPDATE notifications SET status = ?2, attempts = attempts + 1, last_error = COALESCE(?3, last_error), \
             next_attempt_at = ?4, sent_at = CASE WHEN ?2 = 'sent' THEN ?5 ELSE sent_at END \
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![id, status, error, next_at.millis(), tx.now.millis()])?;
    if done == 0 {
        return Err(StoreError::conflict(format!("notification #{id} is not queued")));
    }
    Ok(fetch(tx, id)?.notification)
}

fn task_status(tx: &Tx<'_>, task_id: i64) -> StoreResult<Status> {
    let status: String = tx.query_row("SELECT status FROM tasks WHERE id = ?1", [task_id], |row| {
        row.get(0)
    })?;
    status.parse().map_err(StoreError::Corrupt)
}

#[async_trait::async_trait]
impl Outbox for Sqlite {
    async fn notify_cursor(&self) -> StoreResult<i64> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT last_event_id FROM notify_cursor WHERE id = 1",
                [],
                |row| row.get(0),
            )?)
        })
        .await
    }

    async fn queue_notifications(
        &self,
        cursor: Option<i64>,
        items: &[NewNotification],
    ) -> StoreResult<usize> {
        let items = items.to_vec();
        self.write(move |tx| {
            let mut queued = 0;
            for n in &items {
                queued += usize::from(insert(tx, n)?);
            }
            if let Some(cursor) = cursor {
                tx.execute(
                    "UPDATE notify_cursor SET last_event_id = MAX(last_event_id, ?1) WHERE id = 1",
                    [cursor],
                )?;
            }
            Ok(queued)
        })
        .await
        .inspect(|n| self.options.telemetry.notifications("queued", *n as u64))
    }

    async fn due_notifications(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<Outgoing>> {
        self.read(move |conn| {
            select(
                conn,
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE status = 'queued' AND next_attempt_at <= ?1 \
                     ORDER BY next_attempt_at, id LIMIT ?2"
                ),
                params![now.millis(), limit],
            )
        })
        .await
    }

    async fn next_notification_due(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|conn| {
            let at: Option<i64> = conn.query_row(
                "SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'queued'",
                [],
                |row| row.get(0),
            )?;
            Ok(at.map(Timestamp))
        })
        .await
    }

    async fn notification_sent(&self, id: i64) -> StoreResult<()> {
        self.write(move |tx| {
            let n = attempt_done(tx, id, "sent", None, tx.now)?;
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
            Ok(())
        })
        .await
        .inspect(|()| self.options.telemetry.notifications("sent", 1))
    }

    async fn notification_attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let error = error.to_string();
        self.write(move |tx| {
            let (status, at) = match retry_at {
                Some(at) => ("queued", at),
                None => ("failed", tx.now),
            };
            let n = attempt_done(tx, id, status, Some(&error), at)?;
            if retry_at.is_none() {
                tx.event(NewEvent {
                    task_id: n.task_id,
                    actor: Some("loop:notify".into()),
                    change: Change::NotificationFailed {
                        notification: id,
                        to: n.to,
                        reason: n.reason,
                        attempts: n.attempts,
                        error,
                    },
                });
            }
            Ok(())
        })
        .await
        .inspect(|_| self.options.telemetry.notifications("failed", 1))
    }

    async fn list_notifications(&self, filter: &NotificationFilter) -> StoreResult<NotificationPage> {
        let filter = filter.clone();
        let limit = filter.limit;
        let mut items: Vec<Notification> = self
            .read(move |conn| {
                select(
                    conn,
                    &format!(
                        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE (?1 IS NULL OR status = ?1) \
                         AND (?2 IS NULL OR task_id = ?2) AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
                    ),
                    params![
                        filter.status.map(NotificationStatus::as_str),
                        filter.task_id,
                        filter.before_id,
                        filter.limit + 1
                    ],
                )
            })
            .await?
            .into_iter()
            .map(|o| o.notification)
            .collect();
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|n| n.id.to_string())
        } else {
            None
        };
        Ok(NotificationPage { items, next_cursor })
    }

    async fn notification(&self, id: i64) -> StoreResult<Notification> {
        self.read(move |conn| Ok(fetch(conn, id)?.notification)).await
    }

    async fn declined_by(&self, task_id: i64) -> StoreResult<Vec<String>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT human FROM notifications WHERE task_id = ?1 AND action = 'decline' ORDER BY acted_at, id",
                )?
                .query_map([task_id], |row| row.get(0))?
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn open_offer(&self, task_id: i64) -> StoreResult<Option<(i64, String)>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, human FROM notifications WHERE task_id = ?1 AND action IS NULL \
                     AND reason IN ('routed', 'spawn_fallback', 'blocked') ORDER BY id DESC LIMIT 1",
                )?
                .query_row([task_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?)
        })
        .await
    }

    async fn task_routing(&self, task_id: i64) -> StoreResult<(i64, Option<String>)> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT fence, routed_reason FROM tasks WHERE id = ?1")?
                .query_row([task_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
                .ok_or_else(|| StoreError::not_found(format!("task #{task_id}")))
        })
        .await
    }

    async fn take_by_link(&self, id: i64, who: &Principal, lease: Duration) -> StoreResult<Claimed> {
        let (who, kinds) = (who.clone(), self.options.human_kinds.clone());
        self.write(move |tx| {
            let n = use_link(tx, id, LinkAction::Take)?;
            let task_id = n
                .task_id
                .ok_or_else(|| StoreError::conflict("this email is not about one task"))?;
            if task_status(tx, task_id)? == Status::Blocked {
                unblock_in(tx, task_id, &who, Some("taken from an email".into()))?;
            }
            claim_in(tx, task_id, &who, lease, &kinds)
        })
        .await
    }

    async fn decline_by_link(&self, id: i64, next: Option<&NewNotification>) -> StoreResult<Notification> {
        let next = next.cloned();
        let offered_on = next.is_some();
        let (declined, queued) = self
            .write(move |tx| {
                let n = use_link(tx, id, LinkAction::Decline)?;
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
                let status = task_status(tx, task_id)?;
                if status != waiting {
                    return Err(StoreError::conflict(format!(
                        "task #{task_id} has moved on since the email: it is {status} now"
                    )));
                }
                let mut queued = false;
                let reason = match &next {
                    Some(next) => {
                        queued = insert(tx, next)?;
                        format!("declined by {}; offered to {}", n.human, next.human)
                    }
                    None => format!(
                        "declined by {}; nobody else matches: waiting in the manual queue",
                        n.human
                    ),
                };
                // A blocked task keeps its routing: once unblocked it is routed afresh.
                if waiting == Status::Available {
                    tx.execute(
                        "UPDATE tasks SET routed_to = ?2, routed_reason = ?3 WHERE id = ?1",
                        params![task_id, Routed::Human.as_str(), reason],
                    )?;
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
                Ok((n, queued))
            })
            .await?;
        if queued {
            self.options.telemetry.notifications("queued", 1);
        }
        if offered_on {
            self.shared.bus.wake_outbox();
        }
        Ok(declined)
    }
}
