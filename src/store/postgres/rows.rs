//! PostgreSQL rows as the backend-neutral readers of `store::rows` see them ([`Columns`]).

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::store::rows::Columns;
use crate::store::StoreResult;

pub use crate::store::rows::{
    agent, delivery, event, json, loop_run, outgoing, principal, reservation, run, task, to_json,
    AGENT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS, LOOP_RUN_COLUMNS, NOTIFICATION_COLUMNS, RUN_COLUMNS,
    TASK_COLUMNS, TASK_COLUMN_COUNT,
};

/// Task `$1`, selected with [`TASK_COLUMNS`].
pub const SELECT_TASK_BY_ID: &str = "SELECT id, key, project, title, description, priority, kind, \
    capabilities, acceptance_criteria, depends_on, parent_id, route, status, status_reason, attempts, \
    max_attempts, fence, lease_holder, lease_expires_at, not_before, progress_percent, progress_note, \
    last_progress_at, result, created_by, created_at, updated_at, claimed_at, completed_at, stalled_at, \
    paths FROM tasks WHERE id = $1";

impl From<sqlx::Error> for crate::store::StoreError {
    fn from(err: sqlx::Error) -> Self {
        super::connect::classify(err)
    }
}

impl Columns for PgRow {
    fn int(&self, i: usize) -> StoreResult<i64> {
        Ok(self.try_get(i)?)
    }

    fn int_or_null(&self, i: usize) -> StoreResult<Option<i64>> {
        Ok(self.try_get(i)?)
    }

    fn text(&self, i: usize) -> StoreResult<String> {
        Ok(self.try_get(i)?)
    }

    fn text_or_null(&self, i: usize) -> StoreResult<Option<String>> {
        Ok(self.try_get(i)?)
    }

    fn real_or_null(&self, i: usize) -> StoreResult<Option<f64>> {
        Ok(self.try_get(i)?)
    }

    fn flag(&self, i: usize) -> StoreResult<bool> {
        Ok(self.try_get(i)?)
    }
}
