//! Rows as every backend stores them, and their reading into domain objects: the one place a
//! task or an agent row becomes a `Task` or an `Agent`. Each backend reads its driver's rows
//! into these (in its own `rows.rs`).

use crate::domain::{Agent, Lease, Priority, Progress, Role, Route, Status, Task, TaskResult, Timestamp};
use crate::store::{StoreError, StoreResult};

/// The column list every task query selects, in `TaskRow` order.
pub const TASK_COLUMNS: &str = "id, key, project, title, description, priority, kind, capabilities, \
    acceptance_criteria, depends_on, parent_id, route, status, status_reason, attempts, max_attempts, \
    fence, lease_holder, lease_expires_at, not_before, progress_percent, progress_note, \
    last_progress_at, result, created_by, created_at, updated_at, claimed_at, completed_at, stalled_at, paths";

/// How many columns [`TASK_COLUMNS`] names.
pub const TASK_COLUMN_COUNT: usize = 31;

/// One row of `tasks`.
#[derive(Debug)]
pub struct TaskRow {
    pub id: i64,
    pub key: Option<String>,
    pub project: String,
    pub title: String,
    pub description: String,
    pub priority: i64,
    pub kind: String,
    pub capabilities: String,
    pub acceptance_criteria: String,
    pub depends_on: String,
    pub parent_id: Option<i64>,
    pub route: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub fence: i64,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub not_before: i64,
    pub progress_percent: i64,
    pub progress_note: Option<String>,
    pub last_progress_at: Option<i64>,
    pub result: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub claimed_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub stalled_at: Option<i64>,
    pub paths: String,
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
pub struct AgentRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub capabilities: String,
    pub role: String,
    pub status: String,
    pub last_seen: Option<i64>,
    pub created_at: i64,
    pub scope_task_id: Option<i64>,
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
