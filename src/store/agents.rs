//! Agents and their tokens (kept only as SHA-256 hashes), the people among them, and their
//! liveness.

use std::time::Duration;

use crate::domain::input::AgentSpec;
use crate::domain::{Agent, Principal, Role};

use super::StoreResult;

/// Agents.
#[async_trait::async_trait]
pub trait Agents: Send + Sync {
    /// Registers an agent whose bearer token hashes to `token_hash`.
    async fn create_agent(&self, spec: &AgentSpec, token_hash: &str, actor: &Principal)
        -> StoreResult<Agent>;

    /// Agents, by name; the agents of spawned runs that are over only when `finished_runs`.
    async fn list_agents(&self, finished_runs: bool) -> StoreResult<Vec<Agent>>;

    /// The principal behind a token hash, if any, with its liveness status (`online`,
    /// `offline`). Cheap: answered from memory while nothing about agents changed.
    async fn principal_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<(Principal, String)>>;

    /// Records that an agent was just heard from; an offline agent comes back online (with an
    /// event).
    async fn touch_agent(&self, agent_id: i64) -> StoreResult<()>;

    /// Creates the agent `name` or gives it a new token hash (older tokens stop working),
    /// scoped to task `scope` and its subtasks when given. Loops hand each program they start
    /// a fresh token this way.
    async fn rotate_agent_token(
        &self,
        name: &str,
        kind: &str,
        role: Role,
        token_hash: &str,
        scope: Option<i64>,
    ) -> StoreResult<Principal>;

    /// Deactivates agent `id`: its token stops working at once (open streams end) and the
    /// leases it holds are released, each with an event. Returns the agent and those tasks.
    async fn deactivate_agent(&self, id: i64, actor: &Principal) -> StoreResult<(Agent, Vec<i64>)>;

    /// Gives agent `id` the token hashing to `token_hash`; the old token stops working at once.
    /// A deactivated agent is refused.
    async fn replace_agent_token(&self, id: i64, token_hash: &str, actor: &Principal) -> StoreResult<Agent>;

    /// Removes agent `id`, which must never have acted (created, held or changed a task, or
    /// started a run); an agent with a history is refused: deactivate it instead.
    async fn delete_agent(&self, id: i64, actor: &Principal) -> StoreResult<Agent>;

    /// Makes every configured person (name, capabilities) an agent of kind `human` whose token
    /// nobody knows. A name taken by an agent that is not a person is refused.
    async fn sync_humans(&self, people: &[(String, Vec<String>)]) -> StoreResult<()>;

    /// The person named `name`, as a principal.
    async fn person(&self, name: &str) -> StoreResult<Principal>;

    /// Marks agents silent for longer than `silence` offline; returns their names.
    async fn mark_silent_agents_offline(&self, silence: Duration) -> StoreResult<Vec<String>>;
}
