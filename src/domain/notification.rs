//! Notifications: emails to people about work that needs them, kept in an outbox.

use serde::Serialize;
use utoipa::ToSchema;

use super::Timestamp;

/// Event kinds that may call for a notification; a commit carrying one wakes the notify loop.
pub const TRIGGER_EVENTS: [&str; 4] = ["task.routed", "task.failed", "task.blocked", "task.stalled"];

/// Why a person is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The router sent the task to people (its route or kind).
    Routed,
    /// The task should have been spawned, but could not be.
    SpawnFallback,
    /// The task failed after its last attempt.
    Failed,
    /// An agent blocked the task on a decision only a person can make.
    Blocked,
    /// The task is in progress but nothing has been reported for a while.
    Stalled,
    /// The daily summary.
    Digest,
}

impl Reason {
    const ALL: [Reason; 6] = [
        Reason::Routed,
        Reason::SpawnFallback,
        Reason::Failed,
        Reason::Blocked,
        Reason::Stalled,
        Reason::Digest,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Routed => "routed",
            Reason::SpawnFallback => "spawn_fallback",
            Reason::Failed => "failed",
            Reason::Blocked => "blocked",
            Reason::Stalled => "stalled",
            Reason::Digest => "digest",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// True when the email offers to take the task: the task is waiting for someone.
    pub fn offers_take(self) -> bool {
        matches!(self, Reason::Routed | Reason::SpawnFallback | Reason::Blocked)
    }
}

/// Where a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Waiting to be sent (or to be retried).
    Queued,
    /// Accepted by the mail server (or written to a file).
    Sent,
    /// Given up on: rejected for good, or out of attempts.
    Failed,
}

impl NotificationStatus {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Queued => "queued",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Failed => "failed",
        }
    }

    /// Parses a stored or query value.
    pub fn parse(s: &str) -> Option<NotificationStatus> {
        [Self::Queued, Self::Sent, Self::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What a person did with a notification's links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkAction {
    /// Claimed the task for themselves.
    Take,
    /// Passed it on.
    Decline,
}

impl LinkAction {
    /// The stored and URL name.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkAction::Take => "take",
            LinkAction::Decline => "decline",
        }
    }

    /// Parses a stored or URL value.
    pub fn parse(s: &str) -> Option<LinkAction> {
        [Self::Take, Self::Decline].into_iter().find(|v| v.as_str() == s)
    }
}

/// One row of the outbox, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Notification {
    /// Notification id.
    pub id: i64,
    /// The task it is about (none for digests).
    pub task_id: Option<i64>,
    /// The person (their agent name); the email's links act as them.
    pub human: String,
    /// The address it goes to.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// Why it was sent.
    pub reason: Reason,
    /// queued, sent or failed.
    pub status: NotificationStatus,
    /// Sending attempts so far.
    pub attempts: i64,
    /// The last error, such as the mail server's answer.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// When it was sent.
    pub sent_at: Option<Timestamp>,
    /// When the next attempt is due (while queued).
    pub next_attempt_at: Option<Timestamp>,
    /// What the person did with its links, if anything.
    pub action: Option<LinkAction>,
    /// When they did it.
    pub acted_at: Option<Timestamp>,
}

/// A notification to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// The task it is about.
    pub task_id: Option<i64>,
    /// The person's agent name.
    pub human: String,
    /// Their address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// Why.
    pub reason: Reason,
    /// One task, one reason, one person (per claim): one email.
    pub dedupe_key: String,
    /// The rendered bodies, for notifications not about one task (digests).
    pub body: Option<(String, String)>,
}
