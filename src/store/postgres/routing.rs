//! The router's decisions on PostgreSQL: kept on the task row (`routed_to`, `routed_reason`),
//! with a `task.routed` event whenever one changes. Recording a decision is one conditional
//! update, so concurrent routers cannot both announce the same change.

use crate::domain::{Change, NewEvent, Principal, Routed, Status, Task};
use crate::store::{Routes, Routing, StoreError, StoreResult};

use super::rows::TASK_COLUMNS;
use super::tx::Tx;
use super::{lock_task, query_tasks, Postgres};
use crate::store::announce::Announce;

/// Sets a task's routing decision inside the caller's change, with its event when the decision
/// or its reason changed; returns whether it did.
pub(super) async fn set_routing(
    tx: &mut Tx,
    task_id: i64,
    decision: Routed,
    reason: &str,
    fallback: bool,
) -> StoreResult<bool> {
    let changed = sqlx::query(
        "UPDATE tasks SET routed_to = $2, routed_reason = $3 WHERE id = $1 \
         AND (routed_to IS DISTINCT FROM $2 OR routed_reason IS DISTINCT FROM $3)",
    )
    .bind(task_id)
    .bind(decision.as_str())
    .bind(reason)
    .execute(tx.db())
    .await?
    .rows_affected()
        > 0;
    if changed {
        tx.event(NewEvent::task(
            task_id,
            "router",
            Change::TaskRouted {
                decision: Some(decision.as_str().to_string()),
                reason: reason.to_string(),
                fallback,
                declined: false,
                previous: None,
            },
        ));
    }
    Ok(changed)
}

#[async_trait::async_trait]
impl Routes for Postgres {
    async fn routable_tasks(&self, limit: i64) -> StoreResult<Vec<Task>> {
        // Retry backoff is set by the database's clock and judged by it.
        let mut conn = self.conn().await?;
        query_tasks(
            &mut conn,
            sqlx::query(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'available' AND not_before <= taskyard_now_ms() \
                 AND attempts < max_attempts AND route <> 'agent' AND routed_to IS DISTINCT FROM 'human' \
                 ORDER BY priority, id LIMIT $1"
            ))
            .bind(limit),
        )
        .await
    }

    async fn record_routing(
        &self,
        task_id: i64,
        decision: Routed,
        reason: &str,
        fallback: bool,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let changed = set_routing(&mut tx, task_id, decision, reason, fallback).await?;
        self.commit(tx, changed).await
    }

    async fn routing_of(&self, id: i64) -> StoreResult<Option<Routing>> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT routed_to, routed_reason FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some((Some(decision), reason)) => Ok(Some(Routing {
                decision: decision.parse().map_err(StoreError::Corrupt)?,
                reason: reason.unwrap_or_default(),
            })),
            _ => Ok(None),
        }
    }

    async fn reroute(&self, task_id: i64, actor: &Principal) -> StoreResult<Task> {
        let mut tx = self.begin().await?;
        let task = lock_task(tx.db(), task_id).await?;
        if task.status.is_final() {
            return Err(StoreError::conflict(format!(
                "task #{task_id} is {}; a final task is not routed again",
                task.status
            )));
        }
        let previous: Option<String> = sqlx::query_scalar("SELECT routed_to FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_one(tx.db())
            .await?;
        let row = sqlx::query(&format!(
            "UPDATE tasks SET routed_to = NULL, routed_reason = NULL, updated_at = $2 WHERE id = $1 \
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(task_id)
        .bind(tx.now.millis())
        .fetch_one(tx.db())
        .await?;
        let task = super::rows::task(&row)?;
        tx.event(NewEvent::task(
            task_id,
            &actor.name,
            Change::TaskRouted {
                decision: None,
                reason: format!("to be routed afresh, as {} asked", actor.name),
                fallback: false,
                declined: false,
                previous,
            },
        ));
        if task.status == Status::Available {
            tx.ready(task_id);
        }
        self.commit(tx, task).await
    }
}
