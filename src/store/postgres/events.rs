//! The event log on PostgreSQL: appended by each change just before it commits (see `tx.rs`),
//! read back for SSE, the notifier and task pages.

use sqlx::PgConnection;

use crate::domain::event::{NewEvent, PEOPLE_KINDS};
use crate::domain::{Event, Timestamp};
use crate::store::{EventLog, StoreResult};

use super::rows::{event, to_json, EVENT_COLUMNS};
use super::Postgres;

/// Appends `events` inside the caller's transaction, in one statement that first takes the
/// advisory lock `lock` (held to the end of the transaction: see `tx.rs`) and queues the hint
/// `told` for the other nodes (sent when the transaction commits). The follower publishes them
/// once they are committed (`follow.rs`).
pub(super) async fn insert_events(
    conn: &mut PgConnection,
    now: Timestamp,
    new: Vec<NewEvent>,
    lock: i64,
    told: &str,
) -> StoreResult<()> {
    let (mut kinds, mut tasks, mut actors, mut data) = (
        Vec::with_capacity(new.len()),
        Vec::with_capacity(new.len()),
        Vec::with_capacity(new.len()),
        Vec::with_capacity(new.len()),
    );
    for event in &new {
        let (kind, body) = event.change.parts();
        kinds.push(kind.to_string());
        tasks.push(event.task_id);
        actors.push(event.actor.clone());
        data.push(to_json(&body));
    }
    sqlx::query(
        // The lock is taken before any row is formed, so before any id is drawn.
        "WITH appending AS MATERIALIZED (SELECT pg_advisory_xact_lock($6)), \
              told AS MATERIALIZED (SELECT pg_notify($7, $8)) \
         INSERT INTO events (kind, task_id, actor, data, created_at) \
         SELECT e.kind, e.task_id, e.actor, e.data, $5 \
         FROM appending, told, unnest($1::text[], $2::int8[], $3::text[], $4::text[]) WITH ORDINALITY \
             AS e(kind, task_id, actor, data, n) ORDER BY e.n",
    )
    .bind(&kinds)
    .bind(&tasks)
    .bind(&actors)
    .bind(&data)
    .bind(now.millis())
    .bind(lock)
    .bind(super::follow::CHANNEL)
    .bind(told)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl EventLog for Postgres {
    async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event)
        .collect()
    }

    async fn people_events_after(&self, after: i64, limit: i64) -> StoreResult<(Vec<Event>, i64)> {
        // One snapshot for both reads, so the newest id belongs to the same log state.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let kinds: Vec<String> = PEOPLE_KINDS.iter().map(|k| k.to_string()).collect();
        let found = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 AND kind = ANY($2) ORDER BY id LIMIT $3"
        ))
        .bind(after)
        .bind(&kinds)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(event)
        .collect::<StoreResult<Vec<_>>>()?;
        let reached = if found.len() as i64 >= limit {
            found.last().map_or(after, |e| e.id)
        } else {
            let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
                .fetch_one(&mut *tx)
                .await?;
            newest.unwrap_or(after).max(after)
        };
        tx.commit().await?;
        Ok((found, reached))
    }

    async fn task_events(&self, task_id: i64, limit: i64) -> StoreResult<Vec<Event>> {
        let mut found = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE task_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(task_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event)
        .collect::<StoreResult<Vec<_>>>()?;
        found.reverse();
        Ok(found)
    }

    async fn last_event_id(&self) -> StoreResult<i64> {
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(newest.unwrap_or(0))
    }

    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        // Webhook deliveries that are over go with the events they carried.
        sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'queued' AND created_at < $1")
            .bind(before.millis())
            .execute(tx.db())
            .await?;
        let pruned = sqlx::query("DELETE FROM events WHERE created_at < $1")
            .bind(before.millis())
            .execute(tx.db())
            .await?
            .rows_affected();
        self.commit(tx, pruned).await
    }
}
