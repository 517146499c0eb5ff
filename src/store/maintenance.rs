//! Statements the maintenance loops need: agent liveness, stall flags, settling pending work,
//! pruning, online backups, and tokens for loop-run programs.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sqlx::{ConnectOptions, Connection};

use crate::domain::event::NewEvent;
use crate::domain::{Principal, Role, Status, Timestamp};

use super::{deps, Store, StoreError, StoreResult, Wake};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Marks agents silent for longer than `silence` offline; returns their names.
    pub async fn mark_silent_agents_offline(&self, silence: Duration) -> StoreResult<Vec<String>> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let names: Vec<String> = sqlx::query_scalar(
            "UPDATE agents SET status = 'offline' \
             WHERE status = 'online' AND COALESCE(last_seen, created_at) < ? RETURNING name",
        )
        .bind(now.millis() - ms(silence))
        .fetch_all(&mut *tx)
        .await?;
        let events = names
            .iter()
            .map(|name| NewEvent {
                kind: "agent.offline",
                task_id: None,
                actor: Some("loop:agent-liveness".into()),
                data: json!({"agent": name, "silent_for_seconds": silence.as_secs()}),
            })
            .collect();
        self.commit(tx, now, events, Wake::default()).await?;
        Ok(names)
    }

    /// Flags in-progress tasks whose lease is alive but which reported no progress for `quiet`
    /// (once per stall: progress clears the flag). Returns the newly stalled task ids.
    pub async fn flag_stalled_tasks(&self, quiet: Duration) -> StoreResult<Vec<i64>> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let stalled: Vec<(i64, String, i64)> = sqlx::query_as(
            "UPDATE tasks SET stalled_at = ?1 \
             WHERE status = 'in_progress' AND stalled_at IS NULL AND lease_expires_at > ?1 \
               AND COALESCE(last_progress_at, claimed_at) < ?2 \
             RETURNING id, lease_holder, COALESCE(last_progress_at, claimed_at)",
        )
        .bind(now.millis())
        .bind(now.millis() - ms(quiet))
        .fetch_all(&mut *tx)
        .await?;
        let events = stalled
            .iter()
            .map(|(id, holder, last)| NewEvent {
                kind: "task.stalled",
                task_id: Some(*id),
                actor: Some("loop:stall-detector".into()),
                data: json!({"holder": holder, "last_progress_at": Timestamp(*last),
                             "quiet_seconds": quiet.as_secs()}),
            })
            .collect();
        self.commit(tx, now, events, Wake::default()).await?;
        Ok(stalled.into_iter().map(|(id, _, _)| id).collect())
    }

    /// Settles pending tasks whose dependencies have all finished: available when all
    /// completed, blocked when one failed or was cancelled. Returns (released, blocked).
    pub async fn settle_pending(&self) -> StoreResult<(usize, usize)> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let settled: Vec<(i64, String)> = sqlx::query_as(
            "SELECT t.id, t.depends_on FROM tasks t WHERE t.status = 'pending' \
             AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks u ON u.id = d.depends_on_id \
                             WHERE d.task_id = t.id AND u.status NOT IN ('completed', 'failed', 'cancelled'))",
        )
        .fetch_all(&mut *tx)
        .await?;
        let (mut released, mut blocked, mut events) = (Vec::new(), 0, Vec::new());
        for (id, depends_on) in settled {
            // A mangled list must not read as "no dependencies" and release the task.
            let ids: Vec<i64> = serde_json::from_str(&depends_on)
                .map_err(|e| StoreError::Corrupt(format!("depends_on of task #{id}: {e}")))?;
            let (status, reason) = deps::initial_status(&mut tx, &ids).await?;
            if status == Status::Pending {
                continue;
            }
            sqlx::query("UPDATE tasks SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1")
                .bind(id)
                .bind(status.as_str())
                .bind(&reason)
                .bind(now.millis())
                .execute(&mut *tx)
                .await?;
            let kind = if status == Status::Available {
                released.push(id);
                "task.ready"
            } else {
                blocked += 1;
                "task.blocked"
            };
            events.push(NewEvent::task(
                kind,
                id,
                "loop:dependency-release",
                json!({"reason": reason, "dependency": true}),
            ));
        }
        let count = released.len();
        self.commit(tx, now, events, super::Wake::tasks(released)).await?;
        Ok((count, blocked))
    }

    /// Deletes events older than `before`; returns how many.
    pub async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let result = sqlx::query("DELETE FROM events WHERE created_at < ?")
            .bind(before.millis())
            .execute(&mut *tx)
            .await?;
        tx.commit(self).await?;
        Ok(result.rows_affected())
    }

    /// Writes a consistent copy of the database to `target` (which must not exist) with
    /// `VACUUM INTO`, on a connection of its own so writers are not held up.
    pub async fn backup_into(&self, target: &Path) -> StoreResult<()> {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::clone(&self.connect)
            .connect()
            .await?;
        sqlx::query("VACUUM INTO ?")
            .bind(target.to_string_lossy().into_owned())
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }

    /// Creates the agent `name` or gives it a new token hash (older tokens stop working), scoped
    /// to task `scope` and its subtasks when given. Loops and the spawner use this to hand a
    /// fresh token to each program they start.
    pub async fn rotate_agent_token(
        &self,
        name: &str,
        kind: &str,
        role: Role,
        token_hash: &str,
        scope: Option<i64>,
    ) -> StoreResult<Principal> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at, scope_task_id) \
             VALUES (?1, ?2, '[]', ?3, ?4, 'online', ?5, ?6) \
             ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, role = excluded.role, \
                 scope_task_id = excluded.scope_task_id \
             RETURNING id",
        )
        .bind(name)
        .bind(kind)
        .bind(role.as_str())
        .bind(token_hash)
        .bind(now.millis())
        .bind(scope)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit(self).await?;
        self.tokens_changed();
        Ok(Principal {
            agent_id: Some(id),
            name: name.to_string(),
            role,
            kind: kind.to_string(),
            capabilities: Vec::new(),
            scope,
        })
    }
}
