//! Claims and work under a lease: claim, claim-next (with long poll), progress, complete,
//! fail, release, block and unblock, with their role, scope and input checks.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::input::{
    BlockTask, ClaimNext, ClaimTask, CompleteTask, FailTask, NoteBody, ReleaseTask, ReportProgress,
};
use crate::domain::{Principal, Role, Task, Timestamp};
use crate::error::{ApiError, ApiResult};
use crate::store::{ClaimFilter, Claimed, Wants};
use crate::telemetry::Telemetry;

use super::access::{acting_on, require};
use super::handoff;
use super::Service;

/// Claims task `id` (id or key) for `who`.
pub async fn claim(service: &Service, who: &Principal, id: &str, body: ClaimTask) -> ApiResult<Claimed> {
    require(who, Role::Agent)?;
    let lease = body
        .parse()?
        .map(Duration::from_secs)
        .unwrap_or(service.default_lease());
    let id = acting_on(service, who, id).await?;
    let mut claimed = service.store.claim_task(id, who, lease).await?;
    handoff::attach(service, who, &mut claimed).await;
    Ok(claimed)
}

/// Claims the best ready task for `who`, waiting up to `wait_seconds` for work to appear;
/// `None` when nothing fits by then (or the server is shutting down).
pub async fn claim_next(service: &Service, who: &Principal, body: ClaimNext) -> ApiResult<Option<Claimed>> {
    claim_next_unless(service, who, body, &CancellationToken::new()).await
}

/// Observes how long a claim-next call took, waiting included, when it ends in any way.
struct WaitTimer(std::sync::Arc<Telemetry>, Instant);

impl Drop for WaitTimer {
    fn drop(&mut self) {
        self.0.claim_next_wait.observe(self.1.elapsed().as_secs_f64());
    }
}

/// [`claim_next`] for a caller that may stop waiting: once `give_up` is cancelled, no
/// further attempt is made and the answer is `None`. An attempt already under way is finished,
/// never cut off half-done, so the caller can tell whether it holds a lease it must hand back.
pub async fn claim_next_unless(
    service: &Service,
    who: &Principal,
    body: ClaimNext,
    give_up: &CancellationToken,
) -> ApiResult<Option<Claimed>> {
    require(who, Role::Agent)?;
    if let Some(scope) = who.scope {
        return Err(ApiError::Forbidden(format!(
            "this token belongs to the run of task #{scope}; it cannot claim other work"
        )));
    }
    let spec = body.parse()?;
    // Held while this call may wait.
    let _waiting = match spec.wait_seconds {
        0 => None,
        _ => Some(service.streams.start_long_poll(&who.name)?),
    };
    let lease = spec
        .lease_seconds
        .map(Duration::from_secs)
        .unwrap_or(service.default_lease());
    let filter = ClaimFilter {
        capabilities: spec.capabilities.unwrap_or_else(|| who.capabilities.clone()),
        projects: spec.projects,
    };
    let called = Instant::now();
    let deadline = called + Duration::from_secs(spec.wait_seconds);
    let telemetry = service.store.options().telemetry.clone();
    // The whole call, waiting included, however it ends.
    let _timed = WaitTimer(telemetry.clone(), called);
    // In line before the first attempt, so that work created in between is not missed; new work
    // wakes only waiters that could take it, one per task, first come first served.
    let mut waiting = service.store.bus().waiter(Wants {
        capabilities: filter.capabilities.clone(),
        projects: filter.projects.clone(),
        person: who.is_person(),
    });
    let mut shutdown = service.shutdown.clone();
    loop {
        // A lease claimed once shutdown has started, or after the caller gave up, would reach
        // nobody: it would sit unused until it expired, with an attempt spent.
        if *shutdown.borrow_and_update() || give_up.is_cancelled() {
            return Ok(None);
        }
        if spec.wait_seconds > 0 {
            waiting.arm();
        }
        let attempt = Timestamp::now();
        let started = Instant::now();
        let mut claimed = service.store.claim_next(who, &filter, lease).await?;
        telemetry
            .claim_next_latency
            .observe(started.elapsed().as_secs_f64());
        let again = waiting.after_attempt(claimed.as_ref().map(|c| c.task.id));
        if let Some(c) = claimed.as_mut() {
            handoff::attach(service, who, c).await;
            return Ok(claimed);
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        if again {
            continue;
        }
        // Sleep until fitting work is announced, a backoff or lease runs out, or the deadline.
        let mut until = deadline;
        if let Some(at) = service.store.next_timed_wakeup(attempt).await? {
            let ms = (at.millis() - Timestamp::now().millis()).max(0) as u64;
            until = until.min(Instant::now() + Duration::from_millis(ms + 5));
        }
        tokio::select! {
            _ = waiting.woken() => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = shutdown.changed() => {}
            _ = give_up.cancelled() => {}
        }
    }
}

/// Records progress (or a heartbeat) on a task `who` holds; renews the lease.
pub async fn progress(service: &Service, who: &Principal, id: &str, body: ReportProgress) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let spec = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service.store.report_progress(id, who, spec).await?)
}

/// Completes a task `who` holds.
pub async fn complete(service: &Service, who: &Principal, id: &str, body: CompleteTask) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let spec = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service.store.complete(id, who, spec).await?)
}

/// Fails the attempt on a task `who` holds.
pub async fn fail(service: &Service, who: &Principal, id: &str, body: FailTask) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let (fence, reason, retryable) = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service.store.fail(id, who, fence, reason, retryable).await?)
}

/// Hands back a task `who` holds.
pub async fn release(service: &Service, who: &Principal, id: &str, body: ReleaseTask) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let (fence, note) = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service.store.release(id, who, fence, note).await?)
}

/// Blocks a task on a decision only a person can make.
pub async fn block(service: &Service, who: &Principal, id: &str, body: BlockTask) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let (fence, reason) = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service.store.block(id, who, fence, reason).await?)
}

/// Lifts a block (people and admins).
pub async fn unblock(service: &Service, who: &Principal, id: &str, body: NoteBody) -> ApiResult<Task> {
    require(who, Role::Agent)?;
    let note = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service.store.unblock(id, who, note).await?)
}
