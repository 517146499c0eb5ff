//! Handoff: what earlier attempts at a task left for its next holder, from the task's events
//! (see `domain::handoff`) with each spawned run's branch and the end of its log
//! (gathered in `spawn::handoff`).

use crate::domain::handoff::Handoff;
use crate::domain::{Principal, Role};
use crate::error::ApiResult;
use crate::spawn::handoff::gather;
use crate::store::Claimed;

use super::access::{acting_on, require};
use super::Service;

/// The handoff of task `id` (id or key), as `GET /tasks/{id}/handoff` shows it.
pub async fn show(service: &Service, who: &Principal, id: &str) -> ApiResult<Handoff> {
    require(who, Role::Viewer)?;
    let id = acting_on(service, who, id).await?;
    let task = service.store.task(&crate::domain::TaskRef::Id(id)).await?;
    handoff(service, id, task.lease.map(|l| l.fence)).await
}

/// The earlier attempts at task `id`, leaving out the lease with fence `current`.
pub async fn handoff(service: &Service, id: i64, current: Option<i64>) -> ApiResult<Handoff> {
    let runs_dir = service.loops.context().spawner.runs_dir();
    Ok(gather(&service.store, &runs_dir, id, current).await?)
}

/// Attaches the handoff to `who`'s claim of a task that changed hands: one claimed before (its
/// fence is past the first), or work for people, whom a decline may have passed it by (a claim
/// by a person, or of work meant for people). A first claim of agent work (the usual one)
/// costs nothing more. The claim stands whatever happens: a handoff that cannot be read is
/// left out (and logged), never a reason to lose the lease.
pub async fn attach(service: &Service, who: &Principal, claim: &mut Claimed) {
    let task = &claim.task;
    let for_people = who.is_person()
        || task.route == crate::domain::Route::Human
        || service.config.routing.human_kinds.contains(&task.kind);
    if claim.lease.fence <= 1 && !for_people {
        return;
    }
    match handoff(service, task.id, Some(claim.lease.fence)).await {
        Ok(h) if h.attempts.is_empty() => {}
        Ok(h) => claim.handoff = Some(h),
        Err(err) => tracing::warn!(task_id = task.id, error = %err, "could not read a claim's handoff"),
    }
}
