//! Events: the append-only record of every change, fed to SSE, the dashboard, MCP's lease
//! watcher, the notifier and the supervisor. Each kind has a typed payload ([`Change`]), so a
//! producer and its consumers agree at compile time; on the wire and in the log an event is
//! `{"id", "kind", "task_id", "actor", "data", "at"}` with the dotted kind and its payload.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Priority, Reason, Role, RunStatus, Status, Timestamp};

/// What a dependency event points at: the task whose news it is, or (from the safety-net
/// loop that settles waiting tasks) just that dependencies settled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Because {
    /// This dependency completed, failed or was cancelled.
    Task(i64),
    /// Its dependencies, as a whole (always `true`).
    Settled(bool),
}

/// Who blocked a task: a holder or an admin (a decision to make), or a dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BlockedBy {
    /// A dependency failed or was cancelled.
    Dependency {
        /// Which.
        dependency: Because,
    },
    /// Someone asked a person to decide.
    Decision {
        /// The holder whose lease the block ended, if the task was held.
        holder: Option<String>,
        /// That lease's fence.
        fence: Option<i64>,
    },
}

/// A change, by kind, with what it carries. Serialized as `{"kind": "task.created", "data": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data")]
pub enum Change {
    /// A task was created.
    #[serde(rename = "task.created")]
    TaskCreated {
        /// Its first status.
        status: Status,
        /// Why it starts blocked, if it does.
        reason: Option<String>,
        /// Its title (so live views need no fetch).
        #[serde(default)]
        title: String,
        /// Its priority.
        priority: Option<Priority>,
    },
    /// Fields of a task were edited.
    #[serde(rename = "task.updated")]
    TaskUpdated {
        /// The fields that changed.
        fields: Vec<String>,
    },
    /// Its dependencies are done: the task is available.
    #[serde(rename = "task.ready")]
    TaskReady {
        /// The dependency whose completion readied it.
        dependency: Because,
        /// Why, when the safety net settled it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A claim.
    #[serde(rename = "task.claimed")]
    TaskClaimed {
        /// The new holder.
        holder: String,
        /// The claim's fence.
        fence: i64,
        /// Which attempt this is.
        attempt: i64,
        /// When the lease runs out unless renewed.
        expires_at: Timestamp,
    },
    /// Progress was reported.
    #[serde(rename = "task.progress")]
    TaskProgress {
        /// Percent done.
        percent: i64,
        /// The note, if one was given.
        note: Option<String>,
        /// The fence it was reported under.
        fence: i64,
    },
    /// The task was completed.
    #[serde(rename = "task.completed")]
    TaskCompleted {
        /// Who held it.
        holder: String,
        /// Under which fence.
        fence: i64,
        /// What was done.
        summary: String,
    },
    /// An attempt failed, or the task failed for good.
    #[serde(rename = "task.failed")]
    TaskFailed {
        /// Who held it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder: Option<String>,
        /// Under which fence.
        fence: i64,
        /// Why.
        reason: String,
        /// True when it failed for good.
        #[serde(rename = "final")]
        last: bool,
        /// When it may be claimed again, for a retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<Timestamp>,
    },
    /// The holder handed the task back.
    #[serde(rename = "task.released")]
    TaskReleased {
        /// Who held it.
        holder: String,
        /// Under which fence.
        fence: i64,
        /// Why.
        note: Option<String>,
    },
    /// A lease ran out.
    #[serde(rename = "task.lease_expired")]
    TaskLeaseExpired {
        /// Who held it.
        holder: String,
        /// Under which fence.
        fence: i64,
        /// True when the task failed for it (its attempts were used).
        #[serde(rename = "final")]
        last: bool,
    },
    /// A holder kept its lease but reported no progress for too long.
    #[serde(rename = "task.stalled")]
    TaskStalled {
        /// Who holds it.
        holder: String,
        /// Its last progress (or its claim).
        last_progress_at: Timestamp,
        /// The silence allowed.
        quiet_seconds: u64,
    },
    /// The task was blocked.
    #[serde(rename = "task.blocked")]
    TaskBlocked {
        /// Why.
        reason: String,
        /// By whom or what.
        #[serde(flatten)]
        by: BlockedBy,
    },
    /// A block was lifted.
    #[serde(rename = "task.unblocked")]
    TaskUnblocked {
        /// Why.
        note: Option<String>,
        /// Where the task went (available, or pending on dependencies).
        status: Status,
    },
    /// The task was cancelled.
    #[serde(rename = "task.cancelled")]
    TaskCancelled {
        /// Why.
        note: Option<String>,
        /// The ancestor whose cancel reached it, for a subtask.
        via_parent: Option<i64>,
    },
    /// The router decided where the task goes (or forgot its decision, to route it afresh).
    #[serde(rename = "task.routed")]
    TaskRouted {
        /// `human`, `spawn`, `pull` or `wait`; null when the decision was forgotten.
        decision: Option<String>,
        /// Why, in words.
        reason: String,
        /// Work meant for an agent process that went to people instead.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fallback: bool,
        /// A person declined the task (it goes to the next one).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        declined: bool,
        /// The forgotten decision, when routed afresh.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
    },
    /// A spawned run's process started.
    #[serde(rename = "run.started")]
    RunStarted {
        /// The run.
        run_id: i64,
        /// Its agent type.
        agent_type: String,
        /// Its process id.
        pid: i64,
        /// The fence of its claim.
        fence: i64,
        /// The branch it works on, in a git worktree of its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
    },
    /// A spawned run ended.
    #[serde(rename = "run.exited")]
    RunExited {
        /// The run.
        run_id: i64,
        /// How it ended.
        status: RunStatus,
        /// Its exit code, when it exited by itself.
        exit_code: Option<i64>,
        /// Why it failed or was stopped.
        error: Option<String>,
        /// The branch it worked on, kept after the run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        /// The commit the branch pointed at when the run ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch_head: Option<String>,
        /// Commits on the branch beyond its base (a branch with some is a deliverable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch_commits: Option<i64>,
    },
    /// An agent was registered.
    #[serde(rename = "agent.created")]
    AgentCreated {
        /// Its name.
        agent: String,
        /// Its kind.
        kind: String,
        /// Its role.
        role: Role,
    },
    /// An agent was heard from again.
    #[serde(rename = "agent.online")]
    AgentOnline {
        /// Its name.
        agent: String,
    },
    /// An agent went silent.
    #[serde(rename = "agent.offline")]
    AgentOffline {
        /// Its name.
        agent: String,
        /// The silence allowed.
        silent_for_seconds: u64,
    },
    /// An agent was deactivated: its token stopped working and its leases were released.
    #[serde(rename = "agent.deactivated")]
    AgentDeactivated {
        /// Its name.
        agent: String,
        /// The tasks whose leases it held, now released.
        released: Vec<i64>,
    },
    /// An agent was given a new token; the old one stopped working.
    #[serde(rename = "agent.token_rotated")]
    AgentTokenRotated {
        /// Its name.
        agent: String,
    },
    /// An agent that had never acted was removed.
    #[serde(rename = "agent.deleted")]
    AgentDeleted {
        /// Its name.
        agent: String,
    },
    /// An email was delivered.
    #[serde(rename = "notification.sent")]
    NotificationSent {
        /// The notification.
        notification: i64,
        /// Its recipient.
        to: String,
        /// Why it was sent.
        reason: Reason,
        /// Attempts it took.
        attempts: i64,
    },
    /// An email was given up on.
    #[serde(rename = "notification.failed")]
    NotificationFailed {
        /// The notification.
        notification: i64,
        /// Its recipient.
        to: String,
        /// Why it was sent.
        reason: Reason,
        /// Attempts made.
        attempts: i64,
        /// The last error.
        error: String,
    },
    /// A loop ran.
    #[serde(rename = "loop.ran")]
    LoopRan {
        /// The loop's name.
        #[serde(rename = "loop")]
        name: String,
        /// Its kind.
        kind: String,
        /// Did it succeed?
        ok: bool,
        /// What it did, or the error.
        summary: String,
        /// Its run record.
        run_id: i64,
    },
    /// Paths were reserved under a lease.
    #[serde(rename = "reservation.created")]
    ReservationCreated {
        /// The reservation.
        reservation: i64,
        /// The lease's holder.
        holder: String,
        /// The lease's fence.
        fence: i64,
        /// The patterns.
        paths: Vec<String>,
        /// Exclusive or shared.
        exclusive: bool,
    },
    /// A reservation ended: released by its holder, or with its lease.
    #[serde(rename = "reservation.released")]
    ReservationReleased {
        /// The reservation.
        reservation: i64,
        /// The lease's holder.
        holder: String,
        /// The lease's fence.
        fence: i64,
        /// The patterns.
        paths: Vec<String>,
        /// `released`, or how the lease ended (`completed`, `failed`, `expired`, …).
        reason: String,
    },
    /// An event of a kind this version does not know (recorded by another version), kept as
    /// it was recorded.
    #[serde(skip)]
    Other {
        /// Its kind.
        kind: String,
        /// Its data.
        data: Value,
    },
}

impl Change {
    /// The change as recorded: its dotted kind and its data.
    pub fn parts(&self) -> (String, Value) {
        if let Change::Other { kind, data } = self {
            return (kind.clone(), data.clone());
        }
        match serde_json::to_value(self) {
            Ok(Value::Object(mut map)) => {
                let kind = match map.remove("kind") {
                    Some(Value::String(kind)) => kind,
                    _ => String::new(),
                };
                (kind, map.remove("data").unwrap_or(Value::Null))
            }
            _ => (String::new(), Value::Null),
        }
    }

    /// The change a recorded kind and data stand for; one this version cannot read is kept
    /// as [`Change::Other`].
    pub fn from_parts(kind: &str, data: Value) -> Change {
        let tagged = serde_json::json!({"kind": kind, "data": data});
        serde_json::from_value(tagged).unwrap_or_else(|_| Change::Other {
            kind: kind.to_string(),
            data,
        })
    }

    /// The dotted kind.
    pub fn kind(&self) -> String {
        self.parts().0
    }

    /// True for the changes that may call for telling a person (the notify loop's triggers).
    pub fn concerns_people(&self) -> bool {
        matches!(
            self,
            Change::TaskRouted { .. }
                | Change::TaskFailed { .. }
                | Change::TaskBlocked { .. }
                | Change::TaskStalled { .. }
        )
    }

    /// The fence of the lease this change is about, if it names one.
    pub fn fence(&self) -> Option<i64> {
        match self {
            Change::TaskClaimed { fence, .. }
            | Change::TaskProgress { fence, .. }
            | Change::TaskCompleted { fence, .. }
            | Change::TaskFailed { fence, .. }
            | Change::TaskReleased { fence, .. }
            | Change::TaskLeaseExpired { fence, .. }
            | Change::RunStarted { fence, .. }
            | Change::ReservationCreated { fence, .. }
            | Change::ReservationReleased { fence, .. } => Some(*fence),
            Change::TaskBlocked {
                by: BlockedBy::Decision { fence, .. },
                ..
            } => *fence,
            _ => None,
        }
    }
}

/// The kinds the notify loop turns into emails, as stored (see [`Change::concerns_people`]).
pub const PEOPLE_KINDS: [&str; 4] = ["task.routed", "task.failed", "task.blocked", "task.stalled"];

/// One recorded change.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Monotonic id; SSE clients resume from it with `Last-Event-ID`.
    pub id: i64,
    /// The task it concerns, if any.
    pub task_id: Option<i64>,
    /// Who caused it (agent name, `admin`, or a loop).
    pub actor: Option<String>,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub change: Change,
}

/// An event as the API shows it (the document's description of [`Event`]).
#[derive(ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
struct EventDoc {
    /// Monotonic id; SSE clients resume from it with `Last-Event-ID`.
    id: i64,
    /// Dotted kind, e.g. `task.completed`.
    kind: String,
    /// The task it concerns, if any.
    task_id: Option<i64>,
    /// Who caused it (agent name, `admin`, or a loop).
    actor: Option<String>,
    /// Kind-specific details.
    #[schema(value_type = Object)]
    data: Value,
    /// When it happened.
    at: Timestamp,
}

impl utoipa::PartialSchema for Event {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        EventDoc::schema()
    }
}

impl ToSchema for Event {
    fn name() -> std::borrow::Cow<'static, str> {
        EventDoc::name()
    }
}

impl Event {
    /// The dotted kind, as recorded.
    pub fn kind(&self) -> String {
        self.change.kind()
    }

    /// The data, as recorded.
    pub fn data(&self) -> Value {
        self.change.parts().1
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (kind, data) = self.change.parts();
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("kind", &kind)?;
        map.serialize_entry("task_id", &self.task_id)?;
        map.serialize_entry("actor", &self.actor)?;
        map.serialize_entry("data", &data)?;
        map.serialize_entry("at", &self.at)?;
        map.end()
    }
}

/// An event about to be written (the store assigns id and time).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The task it concerns, if any.
    pub task_id: Option<i64>,
    /// Who caused it.
    pub actor: Option<String>,
    /// What happened.
    pub change: Change,
}

impl NewEvent {
    /// An event about task `task_id` caused by `actor`.
    pub fn task(task_id: i64, actor: &str, change: Change) -> Self {
        Self {
            task_id: Some(task_id),
            actor: Some(actor.to_string()),
            change,
        }
    }

    /// An event about no task in particular.
    pub fn general(actor: &str, change: Change) -> Self {
        Self {
            task_id: None,
            actor: Some(actor.to_string()),
            change,
        }
    }

    /// The event as recorded, with the id and time the store gave it.
    pub fn recorded(self, id: i64, at: Timestamp) -> Event {
        Event {
            id,
            task_id: self.task_id,
            actor: self.actor,
            at,
            change: self.change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_serialise_as_they_always_have() {
        let event = NewEvent::task(
            7,
            "ana",
            Change::TaskClaimed {
                holder: "ana".into(),
                fence: 2,
                attempt: 1,
                expires_at: Timestamp(0),
            },
        )
        .recorded(12, Timestamp(0));
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"id": 12, "kind": "task.claimed", "task_id": 7, "actor": "ana",
                   "data": {"holder": "ana", "fence": 2, "attempt": 1, "expires_at": "1970-01-01T00:00:00.000Z"},
                   "at": "1970-01-01T00:00:00.000Z"})
        );
    }

    #[test]
    fn recorded_data_reads_back_as_the_same_change() {
        let samples = [
            (
                "task.blocked",
                json!({"reason": "why", "holder": "ana", "fence": 3}),
            ),
            (
                "task.blocked",
                json!({"reason": "why", "holder": null, "fence": null}),
            ),
            (
                "task.blocked",
                json!({"reason": "dependency #2 is failed", "dependency": 2}),
            ),
            (
                "task.blocked",
                json!({"reason": "dependency #2 is failed", "dependency": true}),
            ),
            ("task.ready", json!({"dependency": 4})),
            (
                "task.failed",
                json!({"holder": "a", "fence": 1, "reason": "x", "final": false,
                                   "retry_at": "1970-01-01T00:00:01.000Z"}),
            ),
            ("task.failed", json!({"reason": "x", "final": true, "fence": 1})),
            (
                "task.routed",
                json!({"decision": "human", "reason": "r", "fallback": true}),
            ),
            (
                "task.routed",
                json!({"decision": null, "reason": "r", "previous": "human"}),
            ),
            (
                "loop.ran",
                json!({"loop": "l", "kind": "k", "ok": true, "summary": "s", "run_id": 1}),
            ),
        ];
        for (kind, data) in samples {
            let change = Change::from_parts(kind, data.clone());
            assert!(!matches!(change, Change::Other { .. }), "{kind} {data}");
            assert_eq!(change.parts(), (kind.to_string(), data), "round trip");
        }
        let blocked = Change::from_parts("task.blocked", json!({"reason": "r", "dependency": 9}));
        assert!(matches!(
            blocked,
            Change::TaskBlocked {
                by: BlockedBy::Dependency {
                    dependency: Because::Task(9)
                },
                ..
            }
        ));
    }

    #[test]
    fn unknown_kinds_are_kept_as_recorded() {
        let change = Change::from_parts("task.teleported", json!({"to": "mars"}));
        assert_eq!(
            change.parts(),
            ("task.teleported".to_string(), json!({"to": "mars"}))
        );
        let every_kind = PEOPLE_KINDS
            .iter()
            .all(|k| !matches!(Change::from_parts(k, json!({})), Change::TaskClaimed { .. }));
        assert!(every_kind);
    }
}
