//! The servers sharing one registry: each node registers itself and beats, and one of them
//! holds the leader lease (a row with a term, judged by the registry's clock) under which the
//! loops that must run once run.

use std::time::Duration;

use serde::Serialize;

use crate::domain::Timestamp;

use super::StoreResult;

/// A node as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Node {
    /// Its id (`server.node_id`).
    pub id: String,
    /// The taskyard version it runs.
    pub version: String,
    /// When it registered (this time it started).
    pub started_at: Timestamp,
    /// When it last beat.
    pub last_heartbeat: Timestamp,
    /// True for the node holding an unexpired leader lease.
    pub leader: bool,
}

/// A leader lease held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Its number: a new leader (or a lease taken again after it ran out) has a higher one.
    pub term: i64,
}

/// Registered nodes and the leader lease.
#[async_trait::async_trait]
pub trait Nodes: Send + Sync {
    /// Registers `node` as started now by the process `instance` (running `version`), unless
    /// another process registered that id and beat within `fresh`: the time of that beat then.
    async fn register(
        &self,
        node: &str,
        instance: &str,
        version: &str,
        fresh: Duration,
    ) -> StoreResult<Option<Timestamp>>;

    /// Records that `node` still lives; false when its record is gone or another process
    /// holds it now.
    async fn heartbeat(&self, node: &str, instance: &str) -> StoreResult<bool>;

    /// Takes the leader lease for `ttl` when nobody holds it or it ran out, or renews it when
    /// `node` holds it; returns the term when `node` leads now.
    async fn lead(&self, node: &str, ttl: Duration) -> StoreResult<Option<Term>>;

    /// Gives the leader lease up, if `node` holds it (a node that stops).
    async fn resign(&self, node: &str) -> StoreResult<()>;

    /// Forgets `node` (its process `instance` stopped).
    async fn leave(&self, node: &str, instance: &str) -> StoreResult<()>;

    /// Nodes that beat within `within`, oldest registration first.
    async fn nodes(&self, within: Duration) -> StoreResult<Vec<Node>>;
}
