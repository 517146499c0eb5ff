//! Tasks: priorities, statuses, routes, and the task object the API returns.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Timestamp;

/// How urgent a task is; `P0` is the most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
pub enum Priority {
    /// CRITICAL
    P0,
    /// HIGH
    P1,
    /// MEDIUM
    P2,
    /// LOW
    P3,
}

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Priority; 4] = [Priority::P0, Priority::P1, Priority::P2, Priority::P3];

    /// The rank stored in the database (0 = most urgent).
    pub fn rank(self) -> i64 {
        self as i64
    }

    /// The priority for a stored rank.
    pub fn from_rank(rank: i64) -> Option<Self> {
        Self::ALL.get(usize::try_from(rank).ok()?).copied()
    }

    /// `P0`..`P3`.
    pub fn as_str(self) -> &'static str {
        ["P0", "P1", "P2", "P3"][self as usize]
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;

    /// Accepts `P1`, `p1`, `1`, `P1-HIGH`, `high`, `HIGH` and the like.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (code, word) = match lower.split_once('-') {
            Some((code, word)) => (code, Some(word)),
            None => (lower.as_str(), None),
        };
        let by_code = match code {
            "p0" | "0" => Some(Priority::P0),
            "p1" | "1" => Some(Priority::P1),
            "p2" | "2" => Some(Priority::P2),
            "p3" | "3" => Some(Priority::P3),
            _ => None,
        };
        let by_word = |w: &str| match w {
            "critical" | "urgent" => Some(Priority::P0),
            "high" => Some(Priority::P1),
            "medium" | "normal" => Some(Priority::P2),
            "low" => Some(Priority::P3),
            _ => None,
        };
        let parsed = match (by_code, word) {
            (Some(p), None) => Some(p),
            (Some(p), Some(w)) if by_word(w) == Some(p) => Some(p),
            (None, None) => by_word(code),
            _ => None,
        };
        parsed.ok_or_else(|| {
            format!("unknown priority {s:?}; use P0..P3 (or P1-HIGH, high, critical, medium, low)")
        })
    }
}

impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Priority {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Priority".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "P0 (critical), P1 (high), P2 (medium) or P3 (low); P1-HIGH, high, critical, \
                            medium and low are accepted too",
            "examples": ["P0", "P1", "P2", "P3"]
        })
    }
}

/// Where a task is in its life; see the transition diagram in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its dependencies to complete.
    Pending,
    /// Ready to be claimed.
    Available,
    /// Held by an agent under a lease.
    InProgress,
    /// Needs a person: blocked by an agent, or by a dependency that failed.
    Blocked,
    /// Done (final).
    Completed,
    /// Given up on (final).
    Failed,
    /// Withdrawn (final).
    Cancelled,
}

impl Status {
    /// Every status, in life order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Available,
        Status::InProgress,
        Status::Blocked,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Available => "available",
            Status::InProgress => "in_progress",
            Status::Blocked => "blocked",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Completed, failed and cancelled tasks never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status {s:?}; use one of pending, available, in_progress, blocked, completed, failed, cancelled")
            })
    }
}

/// Who a task is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// The router decides by priority and kind.
    #[default]
    Auto,
    /// Only pulled by agents; never spawned.
    Agent,
    /// Always goes to a person.
    Human,
    /// Always spawned.
    Spawn,
}

impl Route {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Auto => "auto",
            Route::Agent => "agent",
            Route::Human => "human",
            Route::Spawn => "spawn",
        }
    }
}

impl FromStr for Route {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Route::Auto, Route::Agent, Route::Human, Route::Spawn]
            .into_iter()
            .find(|route| route.as_str() == s)
            .ok_or_else(|| format!("unknown route {s:?}; use one of auto, agent, human, spawn"))
    }
}

/// A task named by its id or by its client-chosen key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskRef {
    /// The server-assigned id.
    Id(i64),
    /// The client-chosen key (never all digits).
    Key(String),
}

impl TaskRef {
    /// Reads a path segment or string: all digits means an id, anything else a key.
    pub fn parse(text: &str) -> Self {
        match text.parse::<i64>() {
            Ok(id) if !text.starts_with('+') && !text.starts_with('-') => TaskRef::Id(id),
            _ => TaskRef::Key(text.to_string()),
        }
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskRef::Id(id) => write!(f, "#{id}"),
            TaskRef::Key(key) => write!(f, "{key:?}"),
        }
    }
}

/// An exclusive hold on an in-progress task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Lease {
    /// The holder's agent name.
    pub holder: String,
    /// Incremented by every claim; every call on the lease must carry it.
    pub fence: i64,
    /// When the lease runs out unless extended by progress.
    pub expires_at: Timestamp,
}

/// The last progress report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Progress {
    /// 0–100.
    pub percent: i64,
    /// The last note, if any.
    pub note: Option<String>,
    /// When progress was last reported.
    pub updated_at: Option<Timestamp>,
}

/// One thing a completed task produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deliverable {
    /// What sort of thing: `commit`, `pr`, `file`, `url`, `doc`, …
    pub kind: String,
    /// Where it is: a commit hash, a URL, a path.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Optional remark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a completed task reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskResult {
    /// What was done.
    pub summary: String,
    /// What it produced.
    pub deliverables: Vec<Deliverable>,
    /// Minutes the holder says it spent.
    pub time_spent_minutes: Option<i64>,
}

/// A task as stored and as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Task {
    /// Server-assigned id.
    pub id: i64,
    /// Optional client-chosen unique key.
    pub key: Option<String>,
    /// Free-text project name.
    pub project: String,
    /// One-line title.
    pub title: String,
    /// Markdown description.
    pub description: String,
    /// P0..P3.
    pub priority: Priority,
    /// `implementation`, `bug`, `architecture`, … (a lowercase word).
    pub kind: String,
    /// Capabilities an agent needs to claim it.
    pub capabilities: Vec<String>,
    /// Files it expects to touch, as glob patterns: a claim reserves them.
    pub paths: Vec<String>,
    /// What "done" means.
    pub acceptance_criteria: Vec<String>,
    /// Ids of the tasks that must complete first.
    pub depends_on: Vec<i64>,
    /// The task this one was split from.
    pub parent_id: Option<i64>,
    /// auto, agent, human or spawn.
    pub route: Route,
    /// Current status.
    pub status: Status,
    /// Why it is blocked, failed or waiting, when there is a reason to give.
    pub status_reason: Option<String>,
    /// Claims used.
    pub attempts: i64,
    /// Claims allowed.
    pub max_attempts: i64,
    /// Present while in progress.
    pub lease: Option<Lease>,
    /// Last progress report.
    pub progress: Progress,
    /// Present once completed.
    pub result: Option<TaskResult>,
    /// Not claimable before this time (retry backoff), when in the future.
    pub not_before: Option<Timestamp>,
    /// The agent that created it.
    pub created_by: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Last claim.
    pub claimed_at: Option<Timestamp>,
    /// Completion time.
    pub completed_at: Option<Timestamp>,
    /// Set by the stall detector while an in-progress task reports no progress.
    pub stalled_since: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_aliases() {
        for (text, want) in [
            ("P0", Priority::P0),
            ("p1", Priority::P1),
            ("P1-HIGH", Priority::P1),
            ("high", Priority::P1),
            ("CRITICAL", Priority::P0),
            ("p2-medium", Priority::P2),
            ("low", Priority::P3),
            ("3", Priority::P3),
        ] {
            assert_eq!(text.parse::<Priority>(), Ok(want), "{text}");
        }
        for bad in ["P4", "P1-LOW", "", "highest", "p"] {
            assert!(bad.parse::<Priority>().is_err(), "{bad}");
        }
    }

    #[test]
    fn task_refs() {
        assert_eq!(TaskRef::parse("42"), TaskRef::Id(42));
        assert_eq!(TaskRef::parse("auth-42"), TaskRef::Key("auth-42".into()));
        assert_eq!(TaskRef::parse("-1"), TaskRef::Key("-1".into()));
    }

    #[test]
    fn status_round_trip() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert_eq!(
            Status::ALL.iter().filter(|s| s.is_final()).count(),
            3,
            "completed, failed, cancelled"
        );
    }
}
