//! Path reservations under a lease: made and released by its holder, ended with the lease,
//! looked up by path. The rules are in `domain::reservation`; claims reserve a task's declared
//! paths in their own change (see `Leases`).

use crate::domain::{Principal, Reservation};

use super::StoreResult;

/// Path reservations.
#[async_trait::async_trait]
pub trait Reservations: Send + Sync {
    /// Reserves `paths` (checked patterns) under the lease on task `id` with `fence`, which
    /// `who` must hold. Refused with a conflict naming the holder, the task and the patterns
    /// when another lease's live reservation is in the way (see `domain::reservation::clash`).
    async fn reserve(
        &self,
        id: i64,
        who: &Principal,
        fence: i64,
        paths: Vec<String>,
        exclusive: bool,
    ) -> StoreResult<Reservation>;

    /// Releases reservation `reservation` of task `id`, held under the lease with `fence`.
    async fn unreserve(
        &self,
        id: i64,
        reservation: i64,
        who: &Principal,
        fence: i64,
    ) -> StoreResult<Reservation>;

    /// Live reservations, oldest first: those overlapping `path` (a path or a pattern), of
    /// task `task_id`, or all.
    async fn reservations(&self, path: Option<String>, task_id: Option<i64>)
        -> StoreResult<Vec<Reservation>>;
}
