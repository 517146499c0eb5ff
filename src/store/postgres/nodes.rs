//! Nodes and the leader lease on PostgreSQL, every time judged by the database's clock: a
//! node's heartbeat, and the one-row leader lease that a node takes when it is free or ran
//! out, and renews while it holds it (a new holder gets the next term).

use std::time::Duration;

use crate::domain::Timestamp;
use crate::store::nodes::{Node, Nodes, Term};
use crate::store::StoreResult;

use super::Postgres;

/// `d` in whole milliseconds (saturating).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Nodes for Postgres {
    async fn register(
        &self,
        node: &str,
        instance: &str,
        version: &str,
        fresh: Duration,
    ) -> StoreResult<Option<Timestamp>> {
        let taken = sqlx::query(
            "INSERT INTO nodes (id, instance, version, started_at, last_heartbeat) \
             VALUES ($1, $2, $3, taskyard_now_ms(), taskyard_now_ms()) \
             ON CONFLICT (id) DO UPDATE SET instance = EXCLUDED.instance, version = EXCLUDED.version, \
               started_at = EXCLUDED.started_at, last_heartbeat = EXCLUDED.last_heartbeat \
             WHERE nodes.instance = EXCLUDED.instance OR nodes.last_heartbeat < taskyard_now_ms() - $4",
        )
        .bind(node)
        .bind(instance)
        .bind(version)
        .bind(millis(fresh))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if taken == 1 {
            self.free_taken().await?;
            return Ok(None);
        }
        let beat: Option<i64> = sqlx::query_scalar("SELECT last_heartbeat FROM nodes WHERE id = $1")
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Some(Timestamp(beat.unwrap_or(0))))
    }

    async fn heartbeat(&self, node: &str, instance: &str) -> StoreResult<bool> {
        let beat = sqlx::query(
            "UPDATE nodes SET last_heartbeat = taskyard_now_ms() WHERE id = $1 AND instance = $2",
        )
        .bind(node)
        .bind(instance)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(beat == 1)
    }

    async fn lead(&self, node: &str, ttl: Duration) -> StoreResult<Option<Term>> {
        let term: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leader (id, node, term, expires_at) VALUES (1, $1, 1, taskyard_now_ms() + $2) \
             ON CONFLICT (id) DO UPDATE SET \
               term = CASE WHEN leader.node = EXCLUDED.node AND leader.expires_at > taskyard_now_ms() \
                           THEN leader.term ELSE leader.term + 1 END, \
               node = EXCLUDED.node, expires_at = EXCLUDED.expires_at \
             WHERE leader.node = EXCLUDED.node OR leader.expires_at <= taskyard_now_ms() \
             RETURNING term",
        )
        .bind(node)
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(term.map(|term| Term { term }))
    }

    async fn resign(&self, node: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE leader SET expires_at = taskyard_now_ms() \
             WHERE node = $1 AND expires_at > taskyard_now_ms()",
        )
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn leave(&self, node: &str, instance: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM nodes WHERE id = $1 AND instance = $2")
            .bind(node)
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn nodes(&self, within: Duration) -> StoreResult<Vec<Node>> {
        let rows: Vec<(String, String, i64, i64, bool)> = sqlx::query_as(
            "SELECT n.id, n.version, n.started_at, n.last_heartbeat, \
                    COALESCE(l.node = n.id AND l.expires_at > taskyard_now_ms(), false) \
             FROM nodes n LEFT JOIN leader l ON l.id = 1 \
             WHERE n.last_heartbeat >= taskyard_now_ms() - $1 ORDER BY n.started_at, n.id",
        )
        .bind(millis(within))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, version, started, beat, leader)| Node {
                id,
                version,
                started_at: Timestamp(started),
                last_heartbeat: Timestamp(beat),
                leader,
            })
            .collect())
    }
}
