//! Handoff: what earlier attempts at a task left for its next holder, from the task's events
//! (see `domain::handoff`) with each spawned run's branch and the end of its log.

use std::io::SeekFrom;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::domain::handoff::{attempts, Handoff, LOG_TAIL_BYTES};
use crate::domain::{Principal, Role};
use crate::error::ApiResult;
use crate::store::Claimed;

use super::access::{acting_on, require};
use super::Service;

/// Events read to find earlier attempts.
const EVENTS_READ: i64 = 1_000;

/// The handoff of task `id` (id or key), as `GET /tasks/{id}/handoff` shows it.
pub async fn show(service: &Service, who: &Principal, id: &str) -> ApiResult<Handoff> {
    require(who, Role::Viewer)?;
    let id = acting_on(service, who, id).await?;
    let task = service.store.task(&crate::domain::TaskRef::Id(id)).await?;
    handoff(service, id, task.lease.map(|l| l.fence)).await
}

/// The earlier attempts at task `id`, leaving out the lease with fence `current`.
pub async fn handoff(service: &Service, id: i64, current: Option<i64>) -> ApiResult<Handoff> {
    let events = service.store.task_events(id, EVENTS_READ).await?;
    let mut attempts = attempts(&events, current);
    let runs_dir = service.config.server.data_dir.join("runs");
    for a in &mut attempts {
        let Some(run_id) = a.run_id else { continue };
        a.log_tail = log_tail(&runs_dir.join(format!("{run_id}.log"))).await;
    }
    Ok(Handoff {
        task_id: id,
        attempts,
    })
}

/// Attaches the handoff to a claim of a task that changed hands: one claimed before (its
/// fence is past the first), or work for people, whom a decline may have passed it by. A first
/// claim of agent work (the usual one) costs nothing more. The claim stands whatever happens:
/// a handoff that cannot be read is left out (and logged), never a reason to lose the lease.
pub async fn attach(service: &Service, claim: &mut Claimed) {
    let task = &claim.task;
    let for_people =
        task.route == crate::domain::Route::Human || service.config.routing.human_kinds.contains(&task.kind);
    if claim.lease.fence <= 1 && !for_people {
        return;
    }
    match handoff(service, task.id, Some(claim.lease.fence)).await {
        Ok(h) if h.attempts.is_empty() => {}
        Ok(h) => claim.handoff = Some(h),
        Err(err) => tracing::warn!(task_id = task.id, error = %err, "could not read a claim's handoff"),
    }
}

/// The last [`LOG_TAIL_BYTES`] of a run's log, from the first whole line (or character).
async fn log_tail(path: &Path) -> Option<String> {
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let len = file.metadata().await.ok()?.len();
    let from = len.saturating_sub(LOG_TAIL_BYTES);
    file.seek(SeekFrom::Start(from)).await.ok()?;
    let mut bytes = Vec::new();
    file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes).await.ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let text = match (from > 0, text.find('\n')) {
        (true, Some(newline)) => text[newline + 1..].to_string(),
        _ => text.trim_start_matches('\u{fffd}').to_string(),
    };
    (!text.is_empty()).then_some(text)
}
