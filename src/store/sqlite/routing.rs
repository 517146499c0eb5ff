//! The router's decisions on SQLite: kept on the task row (`routed_to`, `routed_reason`), with a
//! `task.routed` event whenever one changes.

use rusqlite::{params, OptionalExtension};

use crate::domain::{Change, NewEvent, Principal, Routed, Status, Task, Timestamp};
use crate::store::{Routes, Routing, StoreError, StoreResult};

use super::engine::Tx;
use super::rows::TASK_COLUMNS;
use super::{fetch_task, query_tasks, Sqlite};
use crate::store::announce::Announce;

/// Sets a task's routing decision inside the caller's change, with its event when the decision
/// or its reason changed; returns whether it did.
pub(super) fn set_routing(
    tx: &mut Tx<'_>,
    task_id: i64,
    decision: Routed,
    reason: &str,
    fallback: bool,
) -> StoreResult<bool> {
    let changed = tx
        .prepare_cached(
            "UPDATE tasks SET routed_to = ?2, routed_reason = ?3 WHERE id = ?1 \
             AND (routed_to IS NOT ?2 OR routed_reason IS NOT ?3)",
        )?
        .execute(params![task_id, decision.as_str(), reason])?
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
impl Routes for Sqlite {
    async fn routable_tasks(&self, limit: i64) -> StoreResult<Vec<Task>> {
        let now = Timestamp::now();
        self.read(move |conn| {
            query_tasks(
                conn,
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'available' AND not_before <= ?1 \
                     AND attempts < max_attempts AND route <> 'agent' AND routed_to IS NOT 'human' \
                     ORDER BY priority, id LIMIT ?2"
                ),
                params![now.millis(), limit],
            )
        })
        .await
    }

    async fn record_routing(
        &self,
        task_id: i64,
        decision: Routed,
        reason: &str,
        fallback: bool,
    ) -> StoreResult<bool> {
        let reason = reason.to_string();
        self.write(move |tx| set_routing(tx, task_id, decision, &reason, fallback))
            .await
    }

    async fn routing_of(&self, id: i64) -> StoreResult<Option<Routing>> {
        self.read(move |conn| {
            let row: Option<(Option<String>, Option<String>)> = conn
                .prepare_cached("SELECT routed_to, routed_reason FROM tasks WHERE id = ?1")?
                .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            match row {
                Some((Some(decision), reason)) => Ok(Some(Routing {
                    decision: decision.parse().map_err(StoreError::Corrupt)?,
                    reason: reason.unwrap_or_default(),
                })),
                _ => Ok(None),
            }
        })
        .await
    }

    async fn reroute(&self, task_id: i64, actor: &Principal) -> StoreResult<Task> {
        let actor = actor.clone();
        self.write(move |tx| {
            let task = fetch_task(tx, task_id)?;
            if task.status.is_final() {
                return Err(StoreError::conflict(format!(
                    "task #{task_id} is {}; a final task is not routed again",
                    task.status
                )));
            }
            let previous: Option<String> =
                tx.query_row("SELECT routed_to FROM tasks WHERE id = ?1", [task_id], |row| {
                    row.get(0)
                })?;
            tx.execute(
                "UPDATE tasks SET routed_to = NULL, routed_reason = NULL, updated_at = ?2 WHERE id = ?1",
                params![task_id, tx.now.millis()],
            )?;
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
            let task = fetch_task(tx, task_id)?;
            if task.status == Status::Available {
                tx.ready(task_id);
            }
            Ok(task)
        })
        .await
    }
}
