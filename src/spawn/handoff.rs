//! Gathering a task's handoff: its earlier attempts from the event log (see
//! `domain::handoff`), and for each spawned run its branch and the end of its log.

use std::path::Path;

use tokio::io::AsyncReadExt;

use crate::domain::handoff::{attempts, Handoff, LOG_TAIL_BYTES};
use crate::domain::task::Deliverable;
use crate::store::{Store, StoreResult};

/// Events read to find earlier attempts.
const EVENTS_READ: i64 = 1_000;

/// The earlier attempts at task `id`, leaving out the lease with fence `current`; run logs are
/// read from `runs_dir`.
pub async fn gather(store: &Store, runs_dir: &Path, id: i64, current: Option<i64>) -> StoreResult<Handoff> {
    let events = store.task_events(id, EVENTS_READ).await?;
    let mut attempts = attempts(&events, current);
    for a in &mut attempts {
        let Some(run_id) = a.run_id else { continue };
        if let Ok(run) = store.run(run_id).await {
            // A run still ending (its lease returned, its process being stopped) has not had
            // its branch read yet: the branch is named all the same.
            a.branch = match (run.deliverable(), &run.branch, run.status.is_live()) {
                (Some(done), _, _) => Some(done),
                (None, Some(branch), true) => Some(Deliverable {
                    kind: "branch".into(),
                    reference: branch.clone(),
                    note: Some("its run is still ending: commits not counted yet".into()),
                }),
                _ => None,
            };
            a.agent_type = Some(run.agent_type);
        }
        a.log_tail = log_tail(&super::log_file(runs_dir, run_id)).await;
    }
    Ok(Handoff {
        task_id: id,
        attempts,
    })
}

/// The last [`LOG_TAIL_BYTES`] of a run's log, from its first whole line when cut.
async fn log_tail(path: &Path) -> Option<String> {
    let mut file = super::open_log_tail(path, LOG_TAIL_BYTES).await.ok()?;
    let cut = file.metadata().await.ok()?.len() > LOG_TAIL_BYTES;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let text = match (cut, text.find('\n')) {
        (true, Some(newline)) => text[newline + 1..].to_string(),
        _ => text.trim_start_matches('\u{fffd}').to_string(),
    };
    (!text.is_empty()).then_some(text)
}
