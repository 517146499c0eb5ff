//! Telling an MCP session that a lease it holds is gone. Each initialized session gets one
//! watcher on the store's event channel: when a task its principal holds has its lease expire,
//! is cancelled, or is completed, failed, released or blocked by someone else (an admin), the
//! session's client gets a `notifications/message` warning naming the task and the fence. The
//! watcher ends with the session (dropping its [`Watcher`] aborts it), when the client can no
//! longer be reached, or at shutdown. Clients that speak the session-less protocol have no
//! channel for such messages; they learn of a lost lease from `lease_lost` on their next call.
//!
//! Logging notifications are deprecated by the newest protocol revision, which drops sessions;
//! they remain the one way to reach a session of the earlier revisions.
#![expect(
    deprecated,
    reason = "logging notifications are how a session-based client hears of a lost lease"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::{Peer, RoleServer};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use crate::domain::Event;
use crate::http::AppState;

/// The running watcher of one session; dropping it stops the watcher.
pub struct Watcher(AbortHandle);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts watching the leases of `holder` for the session behind `peer`. While `quiet` is set
/// (the client asked for errors only) nothing is sent.
pub fn spawn(state: AppState, holder: String, peer: Peer<RoleServer>, quiet: Arc<AtomicBool>) -> Watcher {
    Watcher(tokio::spawn(run(state, holder, peer, quiet)).abort_handle())
}

/// True when a client that asked for messages at `level` and above does not want warnings.
pub fn mutes_warnings(level: LoggingLevel) -> bool {
    matches!(
        level,
        LoggingLevel::Error | LoggingLevel::Critical | LoggingLevel::Alert | LoggingLevel::Emergency
    )
}

/// A lease that is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lost {
    task_id: i64,
    fence: i64,
    why: String,
}

/// Task id → fence of the leases the watched principal holds.
type Held = HashMap<i64, i64>;

async fn run(state: AppState, holder: String, peer: Peer<RoleServer>, quiet: Arc<AtomicBool>) {
    // Subscribe before reading the current leases, so no claim falls between the two.
    let mut events = state.store.subscribe();
    let Some(mut held) = held_now(&state, &holder).await else {
        return;
    };
    let mut shutdown = state.shutdown.clone();
    loop {
        let lost = tokio::select! {
            next = events.recv() => match next {
                Ok(event) => judge(&mut held, &holder, &event).into_iter().collect(),
                // Fallen behind: the database says what is still held.
                Err(RecvError::Lagged(_)) => match held_now(&state, &holder).await {
                    Some(now) => resync(&mut held, now),
                    None => return,
                },
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        };
        for lost in lost {
            if quiet.load(Ordering::Relaxed) {
                continue;
            }
            if peer.notify_logging_message(message(&lost)).await.is_err() {
                // The session is gone.
                return;
            }
        }
    }
}

async fn held_now(state: &AppState, holder: &str) -> Option<Held> {
    match state.store.leases_held_by(holder).await {
        Ok(leases) => Some(leases.into_iter().collect()),
        Err(err) => {
            tracing::warn!(error = %err, holder, "MCP lease watcher cannot read the leases held; it stops");
            None
        }
    }
}

/// What `event` means for the leases `holder` holds: a claim to remember, or a lease that is gone.
fn judge(held: &mut Held, holder: &str, event: &Event) -> Option<Lost> {
    let task_id = event.task_id?;
    let lease_holder = event.data.get("holder").and_then(Value::as_str);
    let fence = event.data.get("fence").and_then(Value::as_i64);
    let mine = lease_holder == Some(holder);
    let by_someone_else = event.actor.as_deref() != Some(holder);
    let actor = event.actor.as_deref().unwrap_or("the server");
    let lost = |fence: i64, why: String| Lost { task_id, fence, why };
    match event.kind.as_str() {
        "task.claimed" if mine => {
            held.insert(task_id, fence?);
            None
        }
        "task.claimed" => held.remove(&task_id).map(|fence| {
            lost(
                fence,
                format!("{} claimed it", lease_holder.unwrap_or("another agent")),
            )
        }),
        "task.lease_expired" if mine => {
            let fence = held.remove(&task_id).or(fence)?;
            Some(lost(fence, "your lease expired".into()))
        }
        "task.completed" | "task.failed" | "task.released" | "task.blocked" if mine => {
            let fence = held.remove(&task_id).or(fence)?;
            let verb = event.kind.trim_start_matches("task.");
            by_someone_else.then(|| lost(fence, format!("{actor} {verb} it")))
        }
        "task.cancelled" => {
            let fence = held.remove(&task_id)?;
            by_someone_else.then(|| lost(fence, format!("{actor} cancelled it")))
        }
        _ => None,
    }
}

/// Replaces what is held by what the database says, reporting leases that ended meanwhile.
fn resync(held: &mut Held, now: Held) -> Vec<Lost> {
    let mut lost: Vec<Lost> = held
        .iter()
        .filter(|(id, fence)| now.get(id) != Some(fence))
        .map(|(&task_id, &fence)| Lost {
            task_id,
            fence,
            why: "the lease ended while this session was catching up with events".into(),
        })
        .collect();
    lost.sort_by_key(|l| l.task_id);
    *held = now;
    lost
}

fn message(lost: &Lost) -> LoggingMessageNotificationParam {
    let Lost { task_id, fence, why } = lost;
    LoggingMessageNotificationParam::new(
        LoggingLevel::Warning,
        json!({
            "event": "lease_lost",
            "task_id": task_id,
            "fence": fence,
            "reason": why,
            "message": format!(
                "Your lease on task #{task_id} (fence {fence}) is gone: {why}. Stop working on this task; \
                 calls with fence {fence} now fail with lease_lost. Call claim_next for new work."
            ),
        }),
    )
    .with_logger("taskyard")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    fn event(kind: &str, task_id: i64, actor: Option<&str>, data: Value) -> Event {
        Event {
            id: 1,
            kind: kind.into(),
            task_id: Some(task_id),
            actor: actor.map(str::to_string),
            data,
            at: Timestamp::now(),
        }
    }

    fn claimed(held: &mut Held, task_id: i64, fence: i64) {
        let claim = event(
            "task.claimed",
            task_id,
            Some("me"),
            json!({"holder": "me", "fence": fence}),
        );
        assert_eq!(judge(held, "me", &claim), None);
    }

    #[test]
    fn remembers_own_claims_and_reports_expiry() {
        let mut held = Held::new();
        claimed(&mut held, 7, 3);
        assert_eq!(held.get(&7), Some(&3));
        let expired = event(
            "task.lease_expired",
            7,
            None,
            json!({"holder": "me", "fence": 3, "final": false}),
        );
        let lost = judge(&mut held, "me", &expired).unwrap();
        assert_eq!((lost.task_id, lost.fence), (7, 3));
        assert!(lost.why.contains("expired"));
        assert!(held.is_empty());
    }

    #[test]
    fn reports_what_others_do_to_held_tasks_but_not_own_acts() {
        let mut held = Held::new();
        claimed(&mut held, 1, 1);
        claimed(&mut held, 2, 5);
        claimed(&mut held, 3, 2);
        let by_admin = event(
            "task.released",
            1,
            Some("admin"),
            json!({"holder": "me", "fence": 1}),
        );
        assert_eq!(
            judge(&mut held, "me", &by_admin).unwrap().why,
            "admin released it"
        );
        let own = event(
            "task.completed",
            2,
            Some("me"),
            json!({"holder": "me", "fence": 5}),
        );
        assert_eq!(judge(&mut held, "me", &own), None);
        let cancelled = event("task.cancelled", 3, Some("boss"), json!({"note": null}));
        assert_eq!(
            judge(&mut held, "me", &cancelled).unwrap().why,
            "boss cancelled it"
        );
        assert!(held.is_empty());
    }

    #[test]
    fn ignores_other_holders_and_unheld_tasks() {
        let mut held = Held::new();
        let theirs = event(
            "task.lease_expired",
            9,
            None,
            json!({"holder": "other", "fence": 1}),
        );
        assert_eq!(judge(&mut held, "me", &theirs), None);
        let cancelled = event("task.cancelled", 9, Some("admin"), json!({}));
        assert_eq!(judge(&mut held, "me", &cancelled), None);
        let their_claim = event(
            "task.claimed",
            9,
            Some("other"),
            json!({"holder": "other", "fence": 2}),
        );
        assert_eq!(judge(&mut held, "me", &their_claim), None);
        assert!(held.is_empty());
    }

    #[test]
    fn resync_reports_leases_that_ended_meanwhile() {
        let mut held: Held = [(1, 1), (2, 4), (3, 1)].into_iter().collect();
        let now: Held = [(2, 4), (3, 2), (5, 1)].into_iter().collect();
        let lost = resync(&mut held, now.clone());
        let ids: Vec<(i64, i64)> = lost.iter().map(|l| (l.task_id, l.fence)).collect();
        assert_eq!(ids, [(1, 1), (3, 1)]);
        assert_eq!(held, now);
    }

    #[test]
    fn only_error_levels_mute_warnings() {
        assert!(!mutes_warnings(LoggingLevel::Debug));
        assert!(!mutes_warnings(LoggingLevel::Warning));
        assert!(mutes_warnings(LoggingLevel::Error));
    }
}
