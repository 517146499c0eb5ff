//! The webhook outbox: deliveries queued from the event log (the cursor moving in the same
//! transaction), their attempts, and their listing.

use crate::domain::webhook::{Delivery, DeliveryStatus, Hook};
use crate::domain::Timestamp;

use super::StoreResult;

/// Webhook deliveries.
#[async_trait::async_trait]
pub trait Webhooks: Send + Sync {
    /// Turns up to `limit` events after the cursor into deliveries for the `hooks` that take
    /// them, and moves the cursor past them, in one transaction. Returns how many events were read
    /// (`limit` means there may be more).
    async fn queue_webhook_deliveries(&self, hooks: &[Hook], limit: i64) -> StoreResult<usize>;

    /// The webhooks with queued deliveries due at `now`.
    async fn due_webhooks(&self, now: Timestamp) -> StoreResult<Vec<String>>;

    /// Queued deliveries of `webhook` due at `now`, oldest first.
    async fn due_webhook_deliveries(
        &self,
        webhook: &str,
        now: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;

    /// When the next queued delivery is due, if any is queued.
    async fn next_webhook_due(&self) -> StoreResult<Option<Timestamp>>;

    /// Records an attempt: delivered (`retry_at` unused), or failed and retried at `retry_at`,
    /// or given up (`retry_at` `None`), with the answer's status and what went wrong.
    async fn webhook_attempted(
        &self,
        id: i64,
        outcome: DeliveryStatus,
        answer: Option<u16>,
        error: Option<String>,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<()>;

    /// Deliveries, newest first, of one status or all.
    async fn list_webhook_deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;
}
