//! The event log, as readers see it: every change was appended in the same transaction as
//! the change itself; SSE replays from it, the notifier derives its outbox from it.

use crate::domain::{Event, Timestamp};

use super::StoreResult;

/// The event log.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync {
    /// Events with id greater than `after`, oldest first.
    async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<Event>>;

    /// Events of the kinds that may call for telling a person with id greater than `after`,
    /// oldest first, and the id the scan reached: the last event returned when `limit` cut it
    /// short, else the newest event of the log. Both come from one snapshot, so nothing between
    /// them is skipped.
    async fn people_events_after(&self, after: i64, limit: i64) -> StoreResult<(Vec<Event>, i64)>;

    /// The most recent events of one task, oldest first.
    async fn task_events(&self, task_id: i64, limit: i64) -> StoreResult<Vec<Event>>;

    /// The id of the newest event (0 when there is none).
    async fn last_event_id(&self) -> StoreResult<i64>;

    /// Deletes events older than `before`, and the webhook deliveries of that age that are over
    /// (delivered or given up); returns how many events.
    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64>;
}
