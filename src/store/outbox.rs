//! The outbox of emails to people: queued from the event log under a cursor that moves in the
//! same transaction, each sending attempt recorded, and the one-time take and decline links.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{NewNotification, Notification, NotificationStatus, Principal, Timestamp};

use super::{Claimed, StoreResult};

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

/// The outbox.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// The last event already turned into notifications.
    async fn notify_cursor(&self) -> StoreResult<i64>;

    /// Queues `items` (a dedupe key already queued is skipped) and moves the event cursor to
    /// `cursor` when given, in one transaction. Returns how many were new.
    async fn queue_notifications(&self, cursor: Option<i64>, items: &[NewNotification])
        -> StoreResult<usize>;

    /// Queued notifications due by `now`, oldest first.
    async fn due_notifications(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<Outgoing>>;

    /// When the next queued notification falls due, if any is queued.
    async fn next_notification_due(&self) -> StoreResult<Option<Timestamp>>;

    /// Records a delivered notification.
    async fn notification_sent(&self, id: i64) -> StoreResult<()>;

    /// Records a failed attempt: retried at `retry_at`, or failed for good when `None`.
    async fn notification_attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<()>;

    /// Notifications, newest first.
    async fn list_notifications(&self, filter: &NotificationFilter) -> StoreResult<NotificationPage>;

    /// One notification.
    async fn notification(&self, id: i64) -> StoreResult<Notification>;

    /// The people who declined task `task_id`, in the order they did.
    async fn declined_by(&self, task_id: i64) -> StoreResult<Vec<String>>;

    /// The newest email offer of task `task_id` nobody has acted on: its id and person.
    async fn open_offer(&self, task_id: i64) -> StoreResult<Option<(i64, String)>>;

    /// A task's fence (claims so far) and the router's last reason, for notifications.
    async fn task_routing(&self, task_id: i64) -> StoreResult<(i64, Option<String>)>;

    /// Follows a take link: the task becomes `who`'s (a blocked task is unblocked first), and
    /// the link is spent — all in one transaction, so a refused claim leaves the link usable.
    async fn take_by_link(&self, id: i64, who: &Principal, lease: Duration) -> StoreResult<Claimed>;

    /// Follows a decline link: the link is spent, and the task is offered to `next` or, when
    /// nobody is left, recorded as waiting in the manual queue.
    async fn decline_by_link(&self, id: i64, next: Option<&NewNotification>) -> StoreResult<Notification>;
}
