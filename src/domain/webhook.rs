//! Webhook deliveries: one event POSTed to one webhook, and how its attempts went.

use serde::Serialize;
use utoipa::ToSchema;

use super::Timestamp;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its (next) attempt.
    Queued,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: the receiver refused it (4xx), or every attempt failed.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "queued" => Ok(DeliveryStatus::Queued),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(format!("unknown delivery status {other:?}")),
        }
    }
}

/// One event for one webhook.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    /// Its id, sent as `taskyard-delivery` (the same on every attempt).
    pub id: i64,
    /// The webhook's name.
    pub webhook: String,
    /// Where it goes.
    pub url: String,
    /// The event delivered.
    pub event_id: i64,
    /// The event's kind.
    pub kind: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// The last answer's HTTP status.
    pub last_status: Option<i64>,
    /// What went wrong last, or the body of a refusal.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// When the next attempt is due (while queued).
    pub next_attempt_at: Option<Timestamp>,
    /// When the receiver took it.
    pub delivered_at: Option<Timestamp>,
    /// The variable holding the signing secret (not shown).
    #[serde(skip)]
    pub secret_env: Option<String>,
    /// What is POSTed (not shown).
    #[serde(skip)]
    pub body: String,
}

/// A configured webhook, as the outbox needs it.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Its name.
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Event kinds it takes (see [`wants`]).
    pub events: Vec<String>,
    /// The variable holding its signing secret.
    pub secret_env: Option<String>,
    /// Only events of tasks in these projects.
    pub projects: Option<Vec<String>>,
    /// A one-line `{"text"}` body instead of the event.
    pub slack: bool,
}

/// Whether event `kind` is one of `patterns`: exact (`task.completed`), a prefix (`task.*`), or `*`.
pub fn wants(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == kind
            || p.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('.') && kind.starts_with(prefix))
    })
}

impl Hook {
    /// Whether this webhook takes `event`, of a task in `project` (if any).
    pub fn takes(&self, event: &super::Event, project: Option<&str>) -> bool {
        wants(&self.events, &event.kind())
            && match (&self.projects, project) {
                (None, _) => true,
                (Some(projects), Some(project)) => projects.iter().any(|p| p == project),
                (Some(_), None) => false,
            }
    }

    /// What is POSTed for `event`: the event as JSON, or a one-line text.
    pub fn body(&self, event: &super::Event) -> String {
        if !self.slack {
            return serde_json::to_string(event).unwrap_or_default();
        }
        let mut line = format!("taskyard: {}", event.kind());
        if let Some(id) = event.task_id {
            line.push_str(&format!(" on task #{id}"));
        }
        if let Some(actor) = &event.actor {
            line.push_str(&format!(" by {actor}"));
        }
        serde_json::json!({ "text": line }).to_string()
    }
}
