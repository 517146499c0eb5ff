//! Reading SQLite rows into the backend-neutral rows of `store::rows`.

use rusqlite::Row;

use crate::domain::Task;
pub use crate::store::rows::{AgentRow, TaskRow};
use crate::store::StoreResult;

pub use crate::store::rows::{json, to_json, AGENT_COLUMNS, TASK_COLUMNS, TASK_COLUMN_COUNT};

impl TaskRow {
    /// Reads a row selected with [`TASK_COLUMNS`].
    pub fn read(row: &Row<'_>) -> rusqlite::Result<TaskRow> {
        Ok(TaskRow {
            id: row.get(0)?,
            key: row.get(1)?,
            project: row.get(2)?,
            title: row.get(3)?,
            description: row.get(4)?,
            priority: row.get(5)?,
            kind: row.get(6)?,
            capabilities: row.get(7)?,
            acceptance_criteria: row.get(8)?,
            depends_on: row.get(9)?,
            parent_id: row.get(10)?,
            route: row.get(11)?,
            status: row.get(12)?,
            status_reason: row.get(13)?,
            attempts: row.get(14)?,
            max_attempts: row.get(15)?,
            fence: row.get(16)?,
            lease_holder: row.get(17)?,
            lease_expires_at: row.get(18)?,
            not_before: row.get(19)?,
            progress_percent: row.get(20)?,
            progress_note: row.get(21)?,
            last_progress_at: row.get(22)?,
            result: row.get(23)?,
            created_by: row.get(24)?,
            created_at: row.get(25)?,
            updated_at: row.get(26)?,
            claimed_at: row.get(27)?,
            completed_at: row.get(28)?,
            stalled_at: row.get(29)?,
            paths: row.get(30)?,
        })
    }
}

impl AgentRow {
    /// Reads a row selected with [`AGENT_COLUMNS`].
    pub fn read(row: &Row<'_>) -> rusqlite::Result<AgentRow> {
        Ok(AgentRow {
            id: row.get(0)?,
            name: row.get(1)?,
            kind: row.get(2)?,
            capabilities: row.get(3)?,
            role: row.get(4)?,
            status: row.get(5)?,
            last_seen: row.get(6)?,
            created_at: row.get(7)?,
            scope_task_id: row.get(8)?,
        })
    }
}

/// Reads a task row selected with [`TASK_COLUMNS`] straight into a task.
pub fn task(row: &Row<'_>) -> rusqlite::Result<StoreResult<Task>> {
    TaskRow::read(row).map(Task::try_from)
}
