//! The lease lifecycle, as callers see it: claims of a given task and of the best ready one,
//! and everything done under a lease — progress, complete, fail, release, block — plus unblock,
//! cancel and the return of expired leases. Every change commits with its events.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::handoff::Handoff;
use crate::domain::input::{CompleteSpec, ProgressSpec};
use crate::domain::{Lease, Principal, Task, Timestamp};

use super::StoreResult;

/// A successful claim: the task and the caller's lease on it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Claimed {
    /// The task, now in progress.
    pub task: Task,
    /// The lease; keep `fence` for every later call.
    pub lease: Lease,
    /// What earlier attempts left, when the task changed hands (see `GET /tasks/{id}/handoff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
}

/// What claim-next may hand out.
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    /// The claimer's capabilities: a task's must be a subset.
    pub capabilities: Vec<String>,
    /// Only these projects, if given.
    pub projects: Option<Vec<String>>,
}

/// The lease lifecycle.
#[async_trait::async_trait]
pub trait Leases: Send + Sync {
    /// Claims one given task. An expired lease is taken over at once.
    async fn claim_task(&self, id: i64, who: &Principal, lease: Duration) -> StoreResult<Claimed>;

    /// Claims the best ready task for `who`: capabilities a subset of the filter's, then
    /// priority, then age (see `domain::claim`); expired leases are returned first. `None` when
    /// nothing fits.
    async fn claim_next(
        &self,
        who: &Principal,
        filter: &ClaimFilter,
        lease: Duration,
    ) -> StoreResult<Option<Claimed>>;

    /// Records progress (or, with neither percent nor note, a heartbeat) and renews the lease.
    async fn report_progress(&self, id: i64, who: &Principal, spec: ProgressSpec) -> StoreResult<Task>;

    /// Completes a task; dependents whose dependencies are now all done become available.
    async fn complete(&self, id: i64, who: &Principal, spec: CompleteSpec) -> StoreResult<Task>;

    /// Fails an attempt: back to `available` after a backoff when retryable with attempts
    /// left, otherwise `failed` for good (and its dependents blocked).
    async fn fail(
        &self,
        id: i64,
        who: &Principal,
        fence: i64,
        reason: String,
        retryable: bool,
    ) -> StoreResult<Task>;

    /// Hands a task back untouched; the attempt is given back too.
    async fn release(&self, id: i64, who: &Principal, fence: i64, note: Option<String>) -> StoreResult<Task>;

    /// Blocks a task on a decision only a person can make (see `domain::lifecycle::check_block`);
    /// the attempt is given back.
    async fn block(&self, id: i64, who: &Principal, fence: Option<i64>, reason: String) -> StoreResult<Task>;

    /// Lifts a block (people and admins): the task waits for its dependencies again or is
    /// available at once. Refused while a dependency is failed or cancelled.
    async fn unblock(&self, id: i64, who: &Principal, note: Option<String>) -> StoreResult<Task>;

    /// Cancels a task and its unfinished subtasks (see `domain::cancel`); dependents of each
    /// become blocked.
    async fn cancel_task(&self, id: i64, actor: &Principal, note: Option<String>) -> StoreResult<Task>;

    /// Returns every expired lease; returns how many.
    async fn reap_expired_leases(&self) -> StoreResult<usize>;

    /// The next moment after `after` at which work may become claimable without anyone acting:
    /// the end of a retry backoff or of a lease.
    async fn next_timed_wakeup(&self, after: Timestamp) -> StoreResult<Option<Timestamp>>;

    /// The leases `holder` holds now, as (task id, fence).
    async fn leases_held_by(&self, holder: &str) -> StoreResult<Vec<(i64, i64)>>;

    /// At startup: shortens every lease that ends more than its own length from now (the
    /// clock was set back while the server was down). Returns how many.
    async fn bound_leases(&self) -> StoreResult<u64>;
}
