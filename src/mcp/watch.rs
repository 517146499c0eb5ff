//! Telling an MCP session that a lease it holds is gone. Each initialized session gets one
//! watcher on the store's event channel. It watches the leases this session claimed (the server
//! handler reports each claim it answers) and the leases its principal held when the session
//! started; when one of them expires, is taken by a newer claim, is cancelled, or is completed,
//! failed, released or blocked by someone else (an admin), the session's client gets a
//! `notifications/message` warning naming the task and the fence, once per lease.
//!
//! Leases the same agent claims elsewhere after the session started (another session, the REST
//! API, the CLI) are not this session's business and are not reported here. Those held at the
//! start are, because the session cannot tell which of them were its own: a client that lost its
//! session (an idle timeout, a restart) and opened a new one still hears about the leases it was
//! working under.
//!
//! The watcher ends with the session (dropping its [`Watcher`] aborts it), when the client can no
//! longer be reached, or at shutdown. Clients that speak the session-less protocol have no channel
//! for such messages; they learn of a lost lease from `lease_lost` on their next call.
//!
//! Logging notifications are deprecated by the newest protocol revision, which drops sessions;
//! they remain the one way to reach a session of the earlier revisions.
#![expect(
    deprecated,
    reason = "logging notifications are how a session-based client hears of a lost lease"
)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::{Peer, RoleServer};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::domain::{Change, Event};
use crate::service::Service;

/// The running watcher of one session; dropping it stops the watcher.
pub struct Watcher(AbortHandle);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A lease a session claimed: the task id and the fence.
pub type Claim = (i64, i64);

/// Starts watching, for the session behind `peer`, the leases `holder` holds now and those that
/// arrive on `claims` (the session's own claims). While `quiet` is set (the client asked for
/// errors only) nothing is sent.
pub fn spawn(
    service: Service,
    holder: String,
    peer: Peer<RoleServer>,
    quiet: Arc<AtomicBool>,
    claims: mpsc::UnboundedReceiver<Claim>,
) -> Watcher {
    Watcher(tokio::spawn(run(service, holder, peer, quiet, claims)).abort_handle())
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

/// Task id → fence.
type Held = HashMap<i64, i64>;

async fn run(
    service: Service,
    holder: String,
    peer: Peer<RoleServer>,
    quiet: Arc<AtomicBool>,
    mut claims: mpsc::UnboundedReceiver<Claim>,
) {
    // What the agent holds as the session starts, read before subscribing; then read again after
    // subscribing, so a lease that ended in between is reported rather than missed.
    let Some(at_start) = held_now(&service, &holder).await else {
        return;
    };
    let mut events = service.store.bus().subscribe();
    let mut leases = Leases::new(at_start);
    let Some(now) = held_now(&service, &holder).await else {
        return;
    };
    let mut lost = explain(
        &service,
        &holder,
        leases.resync(&now, "it ended as this session started"),
    )
    .await;
    let mut shutdown = service.shutdown.clone();
    loop {
        for lost in lost.drain(..) {
            if quiet.load(Ordering::Relaxed) {
                continue;
            }
            if peer.notify_logging_message(message(&lost)).await.is_err() {
                // The session is gone.
                return;
            }
        }
        lost = tokio::select! {
            // A claim reaches this channel before its answer reaches the client, so whatever is
            // done to that lease afterwards comes later: taking claims first keeps that order.
            biased;
            Some((task_id, fence)) = claims.recv() => {
                leases.hold(task_id, fence);
                // Events about this lease may have passed before it was known to be this
                // session's: the database says whether it still stands.
                match held_now(&service, &holder).await {
                    Some(now) => explain(&service, &holder, leases.resync(&now, "it ended right after it was claimed")).await,
                    None => return,
                }
            }
            next = events.recv() => match next {
                Ok(event) => leases.judge(&holder, &event).into_iter().collect(),
                // Fallen behind: the database says what is still held.
                Err(RecvError::Lagged(_)) => match held_now(&service, &holder).await {
                    Some(now) => explain(
                        &service,
                        &holder,
                        leases.resync(&now, "it ended while this session was catching up with events"),
                    )
                    .await,
                    None => return,
                },
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        };
    }
}

/// Leases found gone by reading the database were ended by some event this session did not
/// judge (it passed before the lease was known, or was skipped while catching up). The task's
/// recent events, committed with the change that ended the lease, tell the reason.
async fn explain(service: &Service, holder: &str, lost: Vec<Lost>) -> Vec<Lost> {
    let mut out = Vec::with_capacity(lost.len());
    for mut gone in lost {
        if let Ok(events) = service.store.task_events(gone.task_id, 50).await {
            let mut alone = Leases::new([(gone.task_id, gone.fence)].into_iter().collect());
            match events.iter().find_map(|e| alone.judge(holder, e)) {
                Some(why) => gone.why = why.why,
                // The holder ended it itself (from another session, say): nothing was lost.
                None if alone.held.is_empty() => continue,
                None => {}
            }
        }
        out.push(gone);
    }
    out
}

async fn held_now(service: &Service, holder: &str) -> Option<Held> {
    match service.store.leases_held_by(holder).await {
        Ok(leases) => Some(leases.into_iter().collect()),
        Err(err) => {
            tracing::warn!(error = %err, holder, "MCP lease watcher cannot read the leases held; it stops");
            None
        }
    }
}

/// The leases one session watches and the ones it has reported. A lease is identified by its
/// task and fence: every claim raises the fence, so an event about an older or newer fence is
/// about another lease, whoever holds it.
#[derive(Debug, Default)]
struct Leases {
    /// Task id → fence of the leases watched.
    held: Held,
    /// The (task, fence) pairs already reported lost, so that none is reported twice.
    reported: HashSet<(i64, i64)>,
}

impl Leases {
    fn new(held: Held) -> Self {
        Self {
            held,
            reported: HashSet::new(),
        }
    }

    /// Watches the lease (`task_id`, `fence`) unless it was reported lost already.
    fn hold(&mut self, task_id: i64, fence: i64) {
        if self.reported.contains(&(task_id, fence)) {
            return;
        }
        let newer = self.held.get(&task_id).is_none_or(|&held| held < fence);
        if newer {
            self.held.insert(task_id, fence);
        }
    }

    /// Reports the lease (`task_id`, `fence`) lost, if it is the one watched on that task.
    fn lose(&mut self, task_id: i64, fence: i64, why: String) -> Option<Lost> {
        if self.held.get(&task_id) != Some(&fence) {
            return None;
        }
        self.held.remove(&task_id);
        self.reported
            .insert((task_id, fence))
            .then_some(Lost { task_id, fence, why })
    }

    /// Stops watching (`task_id`, `fence`) without a report: its holder ended it.
    fn forget(&mut self, task_id: i64, fence: i64) {
        if self.held.get(&task_id) == Some(&fence) {
            self.held.remove(&task_id);
        }
    }

    /// What `event` means for the leases watched for `holder`.
    fn judge(&mut self, holder: &str, event: &Event) -> Option<Lost> {
        let task_id = event.task_id?;
        let held = *self.held.get(&task_id)?;
        let fence = event.change.fence();
        let by_holder = event.actor.as_deref() == Some(holder);
        let actor = event.actor.as_deref().unwrap_or("the server");
        let verb = match &event.change {
            Change::TaskClaimed {
                holder: claimer,
                fence,
                ..
            } => {
                if *fence <= held {
                    return None;
                }
                let why = if claimer == holder {
                    format!("it was claimed again under your name (fence {fence}), elsewhere")
                } else {
                    format!("{claimer} claimed it")
                };
                return self.lose(task_id, held, why);
            }
            Change::TaskLeaseExpired { fence, .. } => {
                return self.lose(task_id, *fence, "your lease expired".into())
            }
            // A cancel carries no fence; it ends whatever lease the task has, and no newer one
            // can follow, so the lease watched is the one that ended.
            Change::TaskCancelled { .. } if by_holder => {
                self.forget(task_id, held);
                return None;
            }
            Change::TaskCancelled { .. } => return self.lose(task_id, held, format!("{actor} cancelled it")),
            Change::TaskCompleted { .. } => "completed",
            Change::TaskFailed { .. } => "failed",
            Change::TaskReleased { .. } => "released",
            Change::TaskBlocked { .. } => "blocked",
            _ => return None,
        };
        // Completed, failed, released or blocked under a fence (a block by a dependency has none).
        let fence = fence?;
        if by_holder {
            self.forget(task_id, fence);
            return None;
        }
        self.lose(task_id, fence, format!("{actor} {verb} it"))
    }

    /// Compares the leases watched with `now`, what the database says is held: those no longer
    /// held at their fence are reported lost, for the reason `why`. Leases in `now` that are not
    /// watched stay unwatched.
    fn resync(&mut self, now: &Held, why: &str) -> Vec<Lost> {
        let mut gone: Vec<(i64, i64)> = self
            .held
            .iter()
            .filter(|&(id, fence)| now.get(id) != Some(fence))
            .map(|(&id, &fence)| (id, fence))
            .collect();
        gone.sort_unstable();
        gone.into_iter()
            .filter_map(|(id, fence)| self.lose(id, fence, why.to_string()))
            .collect()
    }
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

    fn event(kind: &str, task_id: i64, actor: Option<&str>, data: serde_json::Value) -> Event {
        Event {
            id: 1,
            task_id: Some(task_id),
            actor: actor.map(str::to_string),
            at: Timestamp::now(),
            change: Change::from_parts(kind, data),
        }
    }

    /// A claim's data, as recorded.
    fn claim(holder: &str, fence: i64) -> serde_json::Value {
        json!({"holder": holder, "fence": fence, "attempt": 1, "expires_at": "2026-01-01T00:00:00.000Z"})
    }

    fn held(leases: &[(i64, i64)]) -> Held {
        leases.iter().copied().collect()
    }

    fn expired(task_id: i64, holder: &str, fence: i64) -> Event {
        event(
            "task.lease_expired",
            task_id,
            None,
            json!({"holder": holder, "fence": fence, "final": false}),
        )
    }

    fn pairs(lost: &[Lost]) -> Vec<(i64, i64)> {
        lost.iter().map(|l| (l.task_id, l.fence)).collect()
    }

    #[test]
    fn reports_the_expiry_of_a_lease_it_watches_once() {
        let mut leases = Leases::default();
        leases.hold(7, 3);
        let lost = leases.judge("me", &expired(7, "me", 3)).unwrap();
        assert_eq!((lost.task_id, lost.fence), (7, 3));
        assert!(lost.why.contains("expired"));
        assert!(leases.held.is_empty());
        // The same event again (a replay), or the lease registered late: still one report.
        assert_eq!(leases.judge("me", &expired(7, "me", 3)), None);
        leases.hold(7, 3);
        assert!(leases.held.is_empty());
        assert_eq!(leases.resync(&held(&[]), "gone"), []);
    }

    #[test]
    fn events_about_another_fence_are_about_another_lease() {
        // The session holds task 7 at fence 3; events of its earlier lease at fence 2 (buffered
        // before the session read its leases, or replayed) say nothing about the current one.
        let mut leases = Leases::new(held(&[(7, 3)]));
        assert_eq!(leases.judge("me", &expired(7, "me", 2)), None);
        let old_release = event(
            "task.released",
            7,
            Some("admin"),
            json!({"holder": "me", "fence": 2}),
        );
        assert_eq!(leases.judge("me", &old_release), None);
        let own_claim = event("task.claimed", 7, Some("me"), claim("me", 3));
        assert_eq!(leases.judge("me", &own_claim), None);
        assert_eq!(leases.held, held(&[(7, 3)]));
    }

    #[test]
    fn a_newer_claim_ends_the_lease_watched() {
        let mut leases = Leases::new(held(&[(7, 3), (8, 1)]));
        let taken = event("task.claimed", 7, Some("b"), claim("b", 4));
        let lost = leases.judge("me", &taken).unwrap();
        assert_eq!(
            (lost.task_id, lost.fence, lost.why.as_str()),
            (7, 3, "b claimed it")
        );
        let mine_elsewhere = event("task.claimed", 8, Some("me"), claim("me", 2));
        let lost = leases.judge("me", &mine_elsewhere).unwrap();
        assert_eq!((lost.task_id, lost.fence), (8, 1));
        assert!(lost.why.contains("under your name"), "{}", lost.why);
    }

    #[test]
    fn reports_what_others_do_to_watched_leases_but_not_the_holders_own_acts() {
        let mut leases = Leases::new(held(&[(1, 1), (2, 5), (3, 2), (4, 1)]));
        let by_admin = event(
            "task.released",
            1,
            Some("admin"),
            json!({"holder": "me", "fence": 1}),
        );
        assert_eq!(leases.judge("me", &by_admin).unwrap().why, "admin released it");
        let own = event(
            "task.completed",
            2,
            Some("me"),
            json!({"holder": "me", "fence": 5, "summary": "done"}),
        );
        assert_eq!(leases.judge("me", &own), None);
        let cancelled = event("task.cancelled", 3, Some("boss"), json!({"note": null}));
        assert_eq!(leases.judge("me", &cancelled).unwrap().why, "boss cancelled it");
        let own_cancel = event("task.cancelled", 4, Some("me"), json!({}));
        assert_eq!(leases.judge("me", &own_cancel), None);
        assert!(leases.held.is_empty());
    }

    #[test]
    fn ignores_tasks_it_does_not_watch() {
        // Leases of the same agent that this session did not claim are not its business.
        let mut leases = Leases::default();
        assert_eq!(leases.judge("me", &expired(9, "me", 1)), None);
        let cancelled = event("task.cancelled", 9, Some("admin"), json!({}));
        assert_eq!(leases.judge("me", &cancelled), None);
        let claimed = event("task.claimed", 9, Some("me"), claim("me", 2));
        assert_eq!(leases.judge("me", &claimed), None);
        assert!(
            leases.held.is_empty(),
            "a claim event does not make a lease this session's"
        );
    }

    #[test]
    fn resync_reports_watched_leases_that_ended_and_adopts_nothing() {
        let mut leases = Leases::new(held(&[(1, 1), (2, 4), (3, 1)]));
        let now = held(&[(2, 4), (3, 2), (5, 1)]);
        let lost = leases.resync(&now, "it ended meanwhile");
        assert_eq!(pairs(&lost), [(1, 1), (3, 1)]);
        assert_eq!(leases.held, held(&[(2, 4)]));
        // A later resync, or the events of those ends arriving afterwards, report nothing new.
        assert_eq!(leases.resync(&now, "again"), []);
        assert_eq!(leases.judge("me", &expired(1, "me", 1)), None);
        let cancelled = event("task.cancelled", 3, Some("admin"), json!({}));
        assert_eq!(leases.judge("me", &cancelled), None);
    }

    #[test]
    fn a_claim_registered_after_its_lease_ended_is_reported_by_the_check() {
        // The cancel passed before the session registered its claim: the event is ignored,
        // and the database check that follows the registration reports the lease once.
        let mut leases = Leases::default();
        let cancelled = event("task.cancelled", 4, Some("admin"), json!({}));
        assert_eq!(leases.judge("me", &cancelled), None);
        leases.hold(4, 2);
        assert_eq!(pairs(&leases.resync(&held(&[]), "ended")), [(4, 2)]);
        assert_eq!(leases.resync(&held(&[]), "ended"), []);
    }

    #[test]
    fn only_error_levels_mute_warnings() {
        assert!(!mutes_warnings(LoggingLevel::Debug));
        assert!(!mutes_warnings(LoggingLevel::Warning));
        assert!(mutes_warnings(LoggingLevel::Error));
    }
}
