//! The router's decisions on available tasks: which to route, recording each decision (with
//! its event when it changes), and forgetting one to route a task afresh.

use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use crate::domain::{Principal, Routed, Task};

use super::StoreResult;

/// The router's current decision on a task.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Routing {
    /// `human`, `spawn`, `pull` or `wait`.
    #[schema(value_type = String)]
    #[serde(serialize_with = "display")]
    pub decision: Routed,
    /// Why, in words.
    pub reason: String,
}

fn display<S: Serializer>(value: &Routed, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_str())
}

/// The router's decisions.
#[async_trait::async_trait]
pub trait Routes: Send + Sync {
    /// Available tasks the router should look at, most urgent first: not `route = agent`, not
    /// already with people, not backing off, attempts left.
    async fn routable_tasks(&self, limit: i64) -> StoreResult<Vec<Task>>;

    /// Records a routing decision; a `task.routed` event is written only when the decision or
    /// its reason changed, so a task waiting for capacity does not fill the log. `fallback`
    /// marks work meant for an agent process that went to people instead. Returns whether
    /// anything changed.
    async fn record_routing(
        &self,
        task_id: i64,
        decision: Routed,
        reason: &str,
        fallback: bool,
    ) -> StoreResult<bool>;

    /// The router's current decision on task `id`, if it made one.
    async fn routing_of(&self, id: i64) -> StoreResult<Option<Routing>>;

    /// Forgets the router's decision on a task, so the next assignment pass (woken at once)
    /// routes it afresh. Refused for final tasks.
    async fn reroute(&self, task_id: i64, actor: &Principal) -> StoreResult<Task>;
}
