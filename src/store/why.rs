//! `why`: whether a task is claimable now and why, with its dependencies, dependents and the
//! router's decisions. Claimable means what claim-next does (see `domain::claim`).

use serde::Serialize;

use utoipa::ToSchema;

use crate::domain::claim::{self, Refusal, Routed};
use crate::domain::{Change, Event, Lease, Route, Status, Task, Timestamp};

use super::{DependencyState, Routing, WhyFacts};

/// Why a task is or is not claimable right now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Why {
    /// The task.
    pub task_id: i64,
    /// Its status.
    pub status: Status,
    /// Could an agent claim it right now?
    pub claimable: bool,
    /// Plain-language reasons, most important first.
    pub reasons: Vec<String>,
    /// Its dependencies and their states.
    pub dependencies: Vec<DependencyState>,
    /// The tasks that depend on it, and their states.
    pub dependents: Vec<DependencyState>,
    /// The current lease, if any.
    pub lease: Option<Lease>,
    /// Claims used and allowed.
    pub attempts: i64,
    /// Claims allowed.
    pub max_attempts: i64,
    /// Capabilities a claimer needs.
    pub capabilities: Vec<String>,
    /// The router's current decision, if it made one.
    pub routing: Option<Routing>,
    /// Routing decisions and stall flags recorded for it, oldest first.
    pub decisions: Vec<Decision>,
}

/// A recorded decision about a task: a routing decision or a stall.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Decision {
    /// The event's kind: `task.routed` or `task.stalled`.
    pub kind: String,
    /// When it was made.
    pub at: Timestamp,
    /// The event's data (`decision`, `reason`, `fallback` for routing).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// The decision as a sentence.
    pub text: String,
}

impl Decision {
    /// The decision an event records, if it records one.
    fn from_event(e: &Event) -> Option<Decision> {
        let text = match &e.change {
            Change::TaskRouted { decision, reason, .. } => {
                match decision.as_deref().and_then(|d| d.parse::<Routed>().ok()) {
                    Some(decision) => decision.sentence(reason),
                    None => reason.clone(),
                }
            }
            Change::TaskStalled { last_progress_at, .. } => {
                format!("stalled: no progress since {}", last_progress_at.to_rfc3339())
            }
            _ => return None,
        };
        let (kind, data) = e.change.parts();
        Some(Decision {
            kind,
            at: e.at,
            data,
            text,
        })
    }
}

/// Explains whether `task` is claimable now and why, from the facts a backend gathered:
/// claimable exactly when claim-next, asked now by an agent with the task's capabilities,
/// would hand it out (see `domain::claim`).
pub fn explain(task: &Task, facts: WhyFacts, human_kinds: &[String], now: Timestamp) -> Why {
    let WhyFacts {
        dependencies,
        dependents,
        routing,
        events,
        clash,
    } = facts;
    let refusal = claim::refusal(
        task,
        routing.as_ref().map(|r| r.decision),
        human_kinds,
        false,
        now,
    );
    let mut reasons = Vec::new();
    match task.status {
        Status::Pending => {
            let waiting: Vec<String> = dependencies
                .iter()
                .filter(|d| d.status != Status::Completed)
                .map(|d| format!("#{} ({})", d.id, d.status))
                .collect();
            reasons.push(format!(
                "waiting for dependencies to complete: {}",
                waiting.join(", ")
            ));
        }
        Status::InProgress => {
            if let (Some(since), Some(at)) = (task.stalled_since, task.progress.updated_at) {
                reasons.push(format!(
                    "stalled since {}: no progress reported since {}",
                    since.to_rfc3339(),
                    at.to_rfc3339()
                ));
            }
            if let Some(lease) = &task.lease {
                if lease.expires_at <= now {
                    reasons.push(format!(
                        "the lease of {} expired at {}; claim-next returns the task first",
                        lease.holder,
                        lease.expires_at.to_rfc3339()
                    ));
                } else {
                    reasons.push(format!(
                        "held by {} (fence {}) until {}",
                        lease.holder,
                        lease.fence,
                        lease.expires_at.to_rfc3339()
                    ));
                }
            }
        }
        Status::Blocked => reasons.push(format!(
            "blocked: {}; waiting for a person to lift the block",
            task.status_reason.as_deref().unwrap_or("needs a decision")
        )),
        Status::Available => {}
        final_status => reasons.push(format!("{final_status}: a final status, never claimable again")),
    }
    let clash = clash.filter(|_| refusal.is_none() && task.status == Status::Available);
    match &refusal {
        None if clash.is_some() => reasons.extend(clash.as_ref().map(|c| c.waiting())),
        None => {
            reasons.push("ready: claim-next hands it to the next agent with the required capabilities".into())
        }
        Some(Refusal::NotAvailable(_)) => {}
        Some(Refusal::BackingOff(at)) => reasons.push(format!(
            "backing off after a failed attempt; claimable from {}",
            at.to_rfc3339()
        )),
        Some(Refusal::AttemptsUsed(max)) => reasons.push(format!(
            "all {max} attempts are used; raise max_attempts (taskyard task edit {} \
                 --max-attempts N) to run it again",
            task.id
        )),
        Some(Refusal::ForPeople) if task.route == Route::Human => {
            reasons.push("waiting for a person: its route is human".into())
        }
        Some(Refusal::ForPeople) => reasons.push(format!(
            "waiting for a person: {} work goes to people (routing.human_kinds)",
            task.kind
        )),
        Some(Refusal::RoutedToPeople) => reasons.push(format!(
            "waiting for a person: {}",
            routing
                .as_ref()
                .map(|r| r.reason.as_str())
                .unwrap_or("the router sent it to people")
        )),
        Some(Refusal::ForSpawner) => {
            reasons.push("its route is spawn: only an agent process the server starts takes it".into())
        }
    }
    if !task.capabilities.is_empty() && !task.status.is_final() {
        reasons.push(format!(
            "a claimer needs the capabilities {}",
            task.capabilities.join(", ")
        ));
    }
    let decisions = events.iter().filter_map(Decision::from_event).collect();
    Why {
        task_id: task.id,
        status: task.status,
        claimable: refusal.is_none() && clash.is_none(),
        reasons,
        dependencies,
        dependents,
        lease: task.lease.clone(),
        attempts: task.attempts,
        max_attempts: task.max_attempts,
        capabilities: task.capabilities.clone(),
        routing,
        decisions,
    }
}
