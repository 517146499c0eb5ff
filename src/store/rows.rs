//! Rows as every backend stores them, and their reading into domain objects: the one place a
//! task, agent, run, notification, webhook delivery, loop run, reservation or event row
//! becomes its domain object, with the column list it is selected with. A backend only says how
//! its driver's row yields a column by position ([`Columns`], in the backend's `rows.rs`).

use crate::domain::webhook::{Delivery, DeliveryStatus};
use crate::domain::{
    Agent, Change, Event, Lease, LinkAction, Notification, NotificationStatus, Principal, Priority, Progress,
    Reason, Reservation, Role, Route, Run, Status, Task, TaskResult, Timestamp,
};
use crate::store::{LoopRun, Outgoing, StoreError, StoreResult};

/// A result row of either backend, read by column position.
pub trait Columns {
    /// An integer column.
    fn int(&self, i: usize) -> StoreResult<i64>;
    /// An integer column that may be NULL.
    fn int_or_null(&self, i: usize) -> StoreResult<Option<i64>>;
    /// A text column.
    fn text(&self, i: usize) -> StoreResult<String>;
    /// A text column that may be NULL.
    fn text_or_null(&self, i: usize) -> StoreResult<Option<String>>;
    /// A real-number column that may be NULL.
    fn real_or_null(&self, i: usize) -> StoreResult<Option<f64>>;
    /// A yes/no column.
    fn flag(&self, i: usize) -> StoreResult<bool>;
}

/// The column list every task query selects, in `TaskRow` order.
pub const TASK_COLUMNS: &str = "id, key, project, title, description, priority, kind, capabilities, \
    acceptance_criteria, depends_on, parent_id, route, status, status_reason, attempts, max_attempts, \
    fence, lease_holder, lease_expires_at, not_before, progress_percent, progress_note, \
    last_progress_at, result, created_by, created_at, updated_at, claimed_at, completed_at, stalled_at, paths";

/// How many columns [`TASK_COLUMNS`] names.
pub const TASK_COLUMN_COUNT: usize = 31;

/// One row of `tasks`.
#[derive(Debug)]
struct TaskRow {
    id: i64,
    key: Option<String>,
    project: String,
    title: String,
    description: String,
    priority: i64,
    kind: String,
    capabilities: String,
    acceptance_criteria: String,
    depends_on: String,
    parent_id: Option<i64>,
    route: String,
    status: String,
    status_reason: Option<String>,
    attempts: i64,
    max_attempts: i64,
    fence: i64,
    lease_holder: Option<String>,
    lease_expires_at: Option<i64>,
    not_before: i64,
    progress_percent: i64,
    progress_note: Option<String>,
    last_progress_at: Option<i64>,
    result: Option<String>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
    claimed_at: Option<i64>,
    completed_at: Option<i64>,
    stalled_at: Option<i64>,
    paths: String,
}

pub fn json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> StoreResult<Task> {
        let status: Status = row.status.parse().map_err(StoreError::Corrupt)?;
        let lease = match (status, row.lease_holder, row.lease_expires_at) {
            (Status::InProgress, Some(holder), Some(expires)) => Some(Lease {
                holder,
                fence: row.fence,
                expires_at: Timestamp(expires),
            }),
            _ => None,
        };
        Ok(Task {
            id: row.id,
            key: row.key,
            project: row.project,
            title: row.title,
            description: row.description,
            priority: Priority::from_rank(row.priority)
                .ok_or_else(|| StoreError::Corrupt(format!("priority rank {}", row.priority)))?,
            kind: row.kind,
            capabilities: json("capabilities", &row.capabilities)?,
            paths: json("paths", &row.paths)?,
            acceptance_criteria: json("acceptance_criteria", &row.acceptance_criteria)?,
            depends_on: json("depends_on", &row.depends_on)?,
            parent_id: row.parent_id,
            route: row.route.parse::<Route>().map_err(StoreError::Corrupt)?,
            status,
            status_reason: row.status_reason,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            lease,
            progress: Progress {
                percent: row.progress_percent,
                note: row.progress_note,
                updated_at: row.last_progress_at.map(Timestamp),
            },
            result: row
                .result
                .as_deref()
                .map(|r| json::<TaskResult>("result", r))
                .transpose()?,
            not_before: (row.not_before > 0 && status == Status::Available)
                .then_some(Timestamp(row.not_before)),
            created_by: row.created_by,
            created_at: Timestamp(row.created_at),
            updated_at: Timestamp(row.updated_at),
            claimed_at: row.claimed_at.map(Timestamp),
            completed_at: row.completed_at.map(Timestamp),
            stalled_since: row
                .stalled_at
                .filter(|_| status == Status::InProgress)
                .map(Timestamp),
        })
    }
}

/// The column list every agent query selects.
pub const AGENT_COLUMNS: &str =
    "id, name, kind, capabilities, role, \
     CASE WHEN deactivated_at IS NULL THEN status ELSE 'deactivated' END, last_seen, created_at, scope_task_id";

/// One row of `agents` (without the token hash).
#[derive(Debug)]
struct AgentRow {
    id: i64,
    name: String,
    kind: String,
    capabilities: String,
    role: String,
    status: String,
    last_seen: Option<i64>,
    created_at: i64,
    scope_task_id: Option<i64>,
}

impl TryFrom<AgentRow> for Agent {
    type Error = StoreError;

    fn try_from(row: AgentRow) -> StoreResult<Agent> {
        Ok(Agent {
            id: row.id,
            name: row.name,
            kind: row.kind,
            capabilities: json("capabilities", &row.capabilities)?,
            role: row.role.parse::<Role>().map_err(StoreError::Corrupt)?,
            status: row.status,
            last_seen: row.last_seen.map(Timestamp),
            created_at: Timestamp(row.created_at),
        })
    }
}

/// Serialises a value stored as a JSON column.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

impl TaskRow {
    /// Reads a row selected with [`TASK_COLUMNS`].
    fn read(row: &impl Columns) -> StoreResult<TaskRow> {
        Ok(TaskRow {
            id: row.int(0)?,
            key: row.text_or_null(1)?,
            project: row.text(2)?,
            title: row.text(3)?,
            description: row.text(4)?,
            priority: row.int(5)?,
            kind: row.text(6)?,
            capabilities: row.text(7)?,
            acceptance_criteria: row.text(8)?,
            depends_on: row.text(9)?,
            parent_id: row.int_or_null(10)?,
            route: row.text(11)?,
            status: row.text(12)?,
            status_reason: row.text_or_null(13)?,
            attempts: row.int(14)?,
            max_attempts: row.int(15)?,
            fence: row.int(16)?,
            lease_holder: row.text_or_null(17)?,
            lease_expires_at: row.int_or_null(18)?,
            not_before: row.int(19)?,
            progress_percent: row.int(20)?,
            progress_note: row.text_or_null(21)?,
            last_progress_at: row.int_or_null(22)?,
            result: row.text_or_null(23)?,
            created_by: row.text_or_null(24)?,
            created_at: row.int(25)?,
            updated_at: row.int(26)?,
            claimed_at: row.int_or_null(27)?,
            completed_at: row.int_or_null(28)?,
            stalled_at: row.int_or_null(29)?,
            paths: row.text(30)?,
        })
    }
}

/// A task, from a row selected with [`TASK_COLUMNS`].
pub fn task(row: &impl Columns) -> StoreResult<Task> {
    Task::try_from(TaskRow::read(row)?)
}

impl AgentRow {
    /// Reads a row selected with [`AGENT_COLUMNS`].
    fn read(row: &impl Columns) -> StoreResult<AgentRow> {
        Ok(AgentRow {
            id: row.int(0)?,
            name: row.text(1)?,
            kind: row.text(2)?,
            capabilities: row.text(3)?,
            role: row.text(4)?,
            status: row.text(5)?,
            last_seen: row.int_or_null(6)?,
            created_at: row.int(7)?,
            scope_task_id: row.int_or_null(8)?,
        })
    }
}

/// An agent, from a row selected with [`AGENT_COLUMNS`].
pub fn agent(row: &impl Columns) -> StoreResult<Agent> {
    Agent::try_from(AgentRow::read(row)?)
}

/// The principal an agent's token stands for, with the agent's liveness status, from a row
/// selected with [`AGENT_COLUMNS`].
pub fn principal(row: &impl Columns) -> StoreResult<(Principal, String)> {
    let row = AgentRow::read(row)?;
    let scope = row.scope_task_id;
    let agent = Agent::try_from(row)?;
    Ok((
        Principal {
            agent_id: Some(agent.id),
            name: agent.name,
            role: agent.role,
            kind: agent.kind,
            capabilities: agent.capabilities,
            scope,
        },
        agent.status,
    ))
}

/// The column list every run query selects.
pub const RUN_COLUMNS: &str = "id, task_id, agent_type, status, holder, fence, pid, started_at, ended_at, \
    exit_code, cpu_percent, memory_bytes, error, repo, worktree, branch, base, branch_head, branch_commits, node";

/// A spawned run, from a row selected with [`RUN_COLUMNS`].
pub fn run(row: &impl Columns) -> StoreResult<Run> {
    Ok(Run {
        id: row.int(0)?,
        task_id: row.int(1)?,
        agent_type: row.text(2)?,
        status: row.text(3)?.parse().map_err(StoreError::Corrupt)?,
        holder: row.text(4)?,
        fence: row.int_or_null(5)?,
        pid: row.int_or_null(6)?,
        started_at: Timestamp(row.int(7)?),
        ended_at: row.int_or_null(8)?.map(Timestamp),
        exit_code: row.int_or_null(9)?,
        cpu_percent: row.real_or_null(10)?,
        memory_bytes: row.int_or_null(11)?,
        error: row.text_or_null(12)?,
        repo: row.text_or_null(13)?,
        worktree: row.text_or_null(14)?,
        branch: row.text_or_null(15)?,
        base: row.text_or_null(16)?,
        branch_head: row.text_or_null(17)?,
        branch_commits: row.int_or_null(18)?,
        node: row.text(19)?,
    })
}

/// The column list every notification query selects.
pub const NOTIFICATION_COLUMNS: &str = "id, task_id, human, to_addr, subject, reason, status, attempts, \
    last_error, next_attempt_at, body_text, body_html, action, acted_at, created_at, sent_at";

/// A notification with its stored bodies, from a row selected with [`NOTIFICATION_COLUMNS`]; a
/// value the schema does not allow is corrupt.
pub fn outgoing(row: &impl Columns) -> StoreResult<Outgoing> {
    let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("notification {what} {v:?}"));
    let status = row.text(6)?;
    let status = NotificationStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?;
    let reason = row.text(5)?;
    let action = match row.text_or_null(12)? {
        None => None,
        Some(a) => Some(LinkAction::parse(&a).ok_or_else(|| corrupt("action", &a))?),
    };
    let notification = Notification {
        id: row.int(0)?,
        task_id: row.int_or_null(1)?,
        human: row.text(2)?,
        to: row.text(3)?,
        subject: row.text(4)?,
        reason: Reason::parse(&reason).ok_or_else(|| corrupt("reason", &reason))?,
        status,
        attempts: row.int(7)?,
        last_error: row.text_or_null(8)?,
        created_at: Timestamp(row.int(14)?),
        sent_at: row.int_or_null(15)?.map(Timestamp),
        next_attempt_at: match status {
            NotificationStatus::Queued => Some(Timestamp(row.int(9)?)),
            _ => None,
        },
        action,
        acted_at: row.int_or_null(13)?.map(Timestamp),
    };
    Ok(Outgoing {
        notification,
        body: row.text_or_null(10)?.zip(row.text_or_null(11)?),
    })
}

/// The column list every webhook delivery query selects.
pub const DELIVERY_COLUMNS: &str = "id, webhook, url, event_id, kind, status, attempts, last_status, \
    last_error, created_at, next_attempt_at, delivered_at, secret_env, body";

/// A webhook delivery, from a row selected with [`DELIVERY_COLUMNS`].
pub fn delivery(row: &impl Columns) -> StoreResult<Delivery> {
    let status = row
        .text(5)?
        .parse::<DeliveryStatus>()
        .map_err(StoreError::Corrupt)?;
    Ok(Delivery {
        id: row.int(0)?,
        webhook: row.text(1)?,
        url: row.text(2)?,
        event_id: row.int(3)?,
        kind: row.text(4)?,
        status,
        attempts: row.int(6)?,
        last_status: row.int_or_null(7)?,
        last_error: row.text_or_null(8)?,
        created_at: Timestamp(row.int(9)?),
        next_attempt_at: match status {
            DeliveryStatus::Queued => Some(Timestamp(row.int(10)?)),
            _ => None,
        },
        delivered_at: row.int_or_null(11)?.map(Timestamp),
        secret_env: row.text_or_null(12)?,
        body: row.text(13)?,
    })
}

/// The column list every loop-run query selects.
pub const LOOP_RUN_COLUMNS: &str = "id, loop_name, kind, started_at, finished_at, ok, summary, details";

/// A loop run, from a row selected with [`LOOP_RUN_COLUMNS`].
pub fn loop_run(row: &impl Columns) -> StoreResult<LoopRun> {
    let id = row.int(0)?;
    Ok(LoopRun {
        id,
        loop_name: row.text(1)?,
        kind: row.text(2)?,
        started_at: Timestamp(row.int(3)?),
        finished_at: Timestamp(row.int(4)?),
        ok: row.flag(5)?,
        summary: row.text(6)?,
        details: json(&format!("details of loop run #{id}"), &row.text(7)?)?,
    })
}

/// A path reservation, from a row selected with the columns `id, task_id, holder, fence,
/// paths, exclusive, created_at` (in that order; each backend's `reservations.rs` names them).
pub fn reservation(row: &impl Columns) -> StoreResult<Reservation> {
    Ok(Reservation {
        id: row.int(0)?,
        task_id: row.int(1)?,
        holder: row.text(2)?,
        fence: row.int(3)?,
        paths: json("reservation paths", &row.text(4)?)?,
        exclusive: row.flag(5)?,
        created_at: Timestamp(row.int(6)?),
    })
}

/// The column list every event query selects.
pub const EVENT_COLUMNS: &str = "id, kind, task_id, actor, data, created_at";

/// An event, from a row selected with [`EVENT_COLUMNS`].
pub fn event(row: &impl Columns) -> StoreResult<Event> {
    let id = row.int(0)?;
    let data = serde_json::from_str(&row.text(4)?)
        .map_err(|e| StoreError::Corrupt(format!("event #{id}'s data: {e}")))?;
    Ok(Event {
        id,
        task_id: row.int_or_null(2)?,
        actor: row.text_or_null(3)?,
        at: Timestamp(row.int(5)?),
        change: Change::from_parts(&row.text(1)?, data),
    })
}
