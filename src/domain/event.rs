//! Events: the append-only record of every change, fed to SSE and the dashboard.

use serde::Serialize;
use utoipa::ToSchema;

use super::Timestamp;

/// One recorded change. Kinds are dotted: `task.created`, `task.claimed`, `agent.offline`, …
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Event {
    /// Monotonic id; SSE clients resume from it with `Last-Event-ID`.
    pub id: i64,
    /// Dotted kind, e.g. `task.completed`.
    pub kind: String,
    /// The task it concerns, if any.
    pub task_id: Option<i64>,
    /// Who caused it (agent name, `admin`, or a loop).
    pub actor: Option<String>,
    /// Kind-specific details.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When it happened.
    pub at: Timestamp,
}

/// An event about to be written (the store assigns id and time).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Dotted kind.
    pub kind: &'static str,
    /// The task it concerns, if any.
    pub task_id: Option<i64>,
    /// Who caused it.
    pub actor: Option<String>,
    /// Details.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event about task `task_id` caused by `actor`.
    pub fn task(kind: &'static str, task_id: i64, actor: &str, data: serde_json::Value) -> Self {
        Self {
            kind,
            task_id: Some(task_id),
            actor: Some(actor.to_string()),
            data,
        }
    }

    /// The event as recorded, with the id and time the store gave it.
    pub fn recorded(self, id: i64, at: crate::domain::Timestamp) -> Event {
        Event {
            id,
            kind: self.kind.to_string(),
            task_id: self.task_id,
            actor: self.actor,
            data: self.data,
            at,
        }
    }
}
