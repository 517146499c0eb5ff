//! Cancelling a task and its unfinished subtasks. The store gathers the subtree and applies the
//! cancel in one transaction; whether the caller may is decided by
//! [`crate::domain::cancel::may_cancel`].

use serde_json::json;

use crate::domain::cancel::{may_cancel, Unfinished};
use crate::domain::event::NewEvent;
use crate::domain::{Principal, Status, Task, Timestamp};

use super::tasks::fetch_existing;
use super::{deps, Store, StoreError, StoreResult, Wake};

/// The task and its descendants, as a recursive CTE named `tree(id)` over `?1`.
const SUBTREE: &str =
    "WITH RECURSIVE tree(id) AS (SELECT ?1 UNION SELECT t.id FROM tasks t JOIN tree ON t.parent_id = tree.id)";

impl Store {
    /// Cancels a task and its unfinished subtasks; dependents of each become blocked.
    pub async fn cancel_task(&self, id: i64, actor: &Principal, note: Option<String>) -> StoreResult<Task> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let task = fetch_existing(&mut tx, id).await?;
        let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(&format!(
            "{SUBTREE} SELECT id, created_by, \
                 CASE WHEN lease_expires_at > ?2 THEN lease_holder END \
             FROM tasks WHERE id IN (SELECT id FROM tree) \
                 AND status NOT IN ('completed', 'failed', 'cancelled') ORDER BY id"
        ))
        .bind(id)
        .bind(now.millis())
        .fetch_all(&mut *tx)
        .await?;
        let unfinished: Vec<Unfinished> = rows
            .into_iter()
            .map(|(id, created_by, holder)| Unfinished {
                id,
                created_by,
                holder,
            })
            .collect();
        may_cancel(actor, id, &unfinished).map_err(StoreError::Forbidden)?;
        if task.status.is_final() {
            return Err(StoreError::Conflict(format!(
                "task #{id} is already {}",
                task.status
            )));
        }
        let cancelled: Vec<i64> = sqlx::query_scalar(&format!(
            "{SUBTREE} UPDATE tasks SET status = 'cancelled', status_reason = ?2, lease_holder = NULL, \
                 lease_expires_at = NULL, updated_at = ?3, completed_at = ?3 \
             WHERE id IN (SELECT id FROM tree) AND status NOT IN ('completed', 'failed', 'cancelled') \
             RETURNING id"
        ))
        .bind(id)
        .bind(
            note.clone()
                .unwrap_or_else(|| format!("cancelled by {}", actor.name)),
        )
        .bind(now.millis())
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::new();
        for cid in &cancelled {
            let cascade = (*cid != id).then_some(id);
            events.push(NewEvent::task(
                "task.cancelled",
                *cid,
                &actor.name,
                json!({"note": note, "via_parent": cascade}),
            ));
        }
        for cid in &cancelled {
            events.extend(deps::block_dependents(&mut tx, *cid, Status::Cancelled, now, &actor.name).await?);
        }
        let updated = fetch_existing(&mut tx, id).await?;
        self.commit(tx, now, events, Wake::default()).await?;
        Ok(updated)
    }
}
