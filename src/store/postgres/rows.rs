//! Reading PostgreSQL rows into the backend-neutral rows of `store::rows`: every column is
//! read by position, in the order the column lists name them.

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::domain::{Agent, Task};
use crate::store::rows::{AgentRow, TaskRow};
use crate::store::{StoreError, StoreResult};

pub use crate::store::rows::{json, to_json, AGENT_COLUMNS, TASK_COLUMNS, TASK_COLUMN_COUNT};

/// Task `$1`, selected with [`TASK_COLUMNS`].
pub const SELECT_TASK_BY_ID: &str = "SELECT id, key, project, title, description, priority, kind, \
    capabilities, acceptance_criteria, depends_on, parent_id, route, status, status_reason, attempts, \
    max_attempts, fence, lease_holder, lease_expires_at, not_before, progress_percent, progress_note, \
    last_progress_at, result, created_by, created_at, updated_at, claimed_at, completed_at, stalled_at, \
    paths FROM tasks WHERE id = $1";

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        super::connect::classify(err)
    }
}

/// Reads a row selected with [`TASK_COLUMNS`].
pub fn task_row(row: &PgRow) -> Result<TaskRow, sqlx::Error> {
    Ok(TaskRow {
        id: row.try_get(0)?,
        key: row.try_get(1)?,
        project: row.try_get(2)?,
        title: row.try_get(3)?,
        description: row.try_get(4)?,
        priority: row.try_get(5)?,
        kind: row.try_get(6)?,
        capabilities: row.try_get(7)?,
        acceptance_criteria: row.try_get(8)?,
        depends_on: row.try_get(9)?,
        parent_id: row.try_get(10)?,
        route: row.try_get(11)?,
        status: row.try_get(12)?,
        status_reason: row.try_get(13)?,
        attempts: row.try_get(14)?,
        max_attempts: row.try_get(15)?,
        fence: row.try_get(16)?,
        lease_holder: row.try_get(17)?,
        lease_expires_at: row.try_get(18)?,
        not_before: row.try_get(19)?,
        progress_percent: row.try_get(20)?,
        progress_note: row.try_get(21)?,
        last_progress_at: row.try_get(22)?,
        result: row.try_get(23)?,
        created_by: row.try_get(24)?,
        created_at: row.try_get(25)?,
        updated_at: row.try_get(26)?,
        claimed_at: row.try_get(27)?,
        completed_at: row.try_get(28)?,
        stalled_at: row.try_get(29)?,
        paths: row.try_get(30)?,
    })
}

/// Reads a task row selected with [`TASK_COLUMNS`] straight into a task.
pub fn task(row: &PgRow) -> StoreResult<Task> {
    Task::try_from(task_row(row)?)
}

/// Reads a row selected with [`AGENT_COLUMNS`].
pub fn agent_row(row: &PgRow) -> Result<AgentRow, sqlx::Error> {
    Ok(AgentRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        kind: row.try_get(2)?,
        capabilities: row.try_get(3)?,
        role: row.try_get(4)?,
        status: row.try_get(5)?,
        last_seen: row.try_get(6)?,
        created_at: row.try_get(7)?,
        scope_task_id: row.try_get(8)?,
    })
}

/// Reads an agent row selected with [`AGENT_COLUMNS`] straight into an agent.
pub fn agent(row: &PgRow) -> StoreResult<Agent> {
    Agent::try_from(agent_row(row)?)
}
