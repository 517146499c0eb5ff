//! Nodes and the leader lease on SQLite. One server holds a SQLite file, so it is the only
//! node and leads; the records are kept all the same, so `GET /nodes` and the loops' gate work
//! the same on every backend.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use crate::domain::Timestamp;
use crate::store::nodes::{Node, Nodes, Term};
use crate::store::StoreResult;

use super::Sqlite;

/// `d` in whole milliseconds (saturating).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Nodes for Sqlite {
    async fn register(
        &self,
        node: &str,
        instance: &str,
        version: &str,
        fresh: Duration,
    ) -> StoreResult<Option<Timestamp>> {
        let (node, instance, version) = (node.to_string(), instance.to_string(), version.to_string());
        self.write(move |tx| {
            let now = tx.now.millis();
            let taken = tx
                .prepare_cached(
                    "INSERT INTO nodes (id, instance, version, started_at, last_heartbeat) \
                     VALUES (?1, ?2, ?3, ?4, ?4) \
                     ON CONFLICT (id) DO UPDATE SET instance = excluded.instance, version = excluded.version, \
                       started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat \
                     WHERE nodes.instance = excluded.instance OR nodes.last_heartbeat < ?4 - ?5",
                )?
                .execute(params![node, instance, version, now, millis(fresh)])?;
            if taken == 1 {
                return Ok(None);
            }
            let beat: i64 = tx
                .prepare_cached("SELECT last_heartbeat FROM nodes WHERE id = ?1")?
                .query_row([&node], |row| row.get(0))?;
            Ok(Some(Timestamp(beat)))
        })
        .await
    }

    async fn heartbeat(&self, node: &str, instance: &str) -> StoreResult<bool> {
        let (node, instance) = (node.to_string(), instance.to_string());
        self.write(move |tx| {
            let beat = tx
                .prepare_cached("UPDATE nodes SET last_heartbeat = ?3 WHERE id = ?1 AND instance = ?2")?
                .execute(params![node, instance, tx.now.millis()])?;
            Ok(beat == 1)
        })
        .await
    }

    async fn lead(&self, node: &str, ttl: Duration) -> StoreResult<Option<Term>> {
        let node = node.to_string();
        self.write(move |tx| {
            let now = tx.now.millis();
            let term: Option<i64> = tx
                .prepare_cached(
                    "INSERT INTO leader (id, node, term, expires_at) VALUES (1, ?1, 1, ?2 + ?3) \
                     ON CONFLICT (id) DO UPDATE SET \
                       term = CASE WHEN leader.node = excluded.node AND leader.expires_at > ?2 \
                                   THEN leader.term ELSE leader.term + 1 END, \
                       node = excluded.node, expires_at = excluded.expires_at \
                     WHERE leader.node = excluded.node OR leader.expires_at <= ?2 \
                     RETURNING term",
                )?
                .query_row(params![node, now, millis(ttl)], |row| row.get(0))
                .optional()?;
            Ok(term.map(|term| Term { term }))
        })
        .await
    }

    async fn resign(&self, node: &str) -> StoreResult<()> {
        let node = node.to_string();
        self.write(move |tx| {
            tx.prepare_cached("UPDATE leader SET expires_at = ?2 WHERE node = ?1 AND expires_at > ?2")?
                .execute(params![node, tx.now.millis()])?;
            Ok(())
        })
        .await
    }

    async fn leave(&self, node: &str, instance: &str) -> StoreResult<()> {
        let (node, instance) = (node.to_string(), instance.to_string());
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM nodes WHERE id = ?1 AND instance = ?2")?
                .execute([node, instance])?;
            Ok(())
        })
        .await
    }

    async fn nodes(&self, within: Duration) -> StoreResult<Vec<Node>> {
        let since = Timestamp::now().millis().saturating_sub(millis(within));
        self.read(move |conn| {
            let now = Timestamp::now().millis();
            let found = conn
                .prepare_cached(
                    "SELECT n.id, n.version, n.started_at, n.last_heartbeat, \
                            COALESCE(l.node = n.id AND l.expires_at > ?2, 0) \
                     FROM nodes n LEFT JOIN leader l ON l.id = 1 \
                     WHERE n.last_heartbeat >= ?1 ORDER BY n.started_at, n.id",
                )?
                .query_map(params![since, now], |row| {
                    Ok(Node {
                        id: row.get(0)?,
                        version: row.get(1)?,
                        started_at: Timestamp(row.get(2)?),
                        last_heartbeat: Timestamp(row.get(3)?),
                        leader: row.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(found)
        })
        .await
    }
}
