//! Agents and their tokens (stored only as SHA-256 hashes).

use serde_json::json;

use crate::domain::event::NewEvent;
use crate::domain::input::AgentSpec;
use crate::domain::{Agent, Principal, Timestamp};

use super::rows::{to_json, AgentRow, AGENT_COLUMNS};
use super::{Store, StoreError, StoreResult, Wake};

impl Store {
    /// Registers an agent whose bearer token hashes to `token_hash`.
    pub async fn create_agent(
        &self,
        spec: &AgentSpec,
        token_hash: &str,
        actor: &Principal,
    ) -> StoreResult<Agent> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM agents WHERE name = ?")
            .bind(&spec.name)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "an agent named {:?} already exists",
                spec.name
            )));
        }
        let row: AgentRow = sqlx::query_as(&format!(
            "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at) \
             VALUES (?, ?, ?, ?, ?, 'online', ?) RETURNING {AGENT_COLUMNS}"
        ))
        .bind(&spec.name)
        .bind(&spec.kind)
        .bind(to_json(&spec.capabilities))
        .bind(spec.role.as_str())
        .bind(token_hash)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await?;
        let agent = Agent::try_from(row)?;
        self.commit(
            tx,
            now,
            vec![NewEvent {
                kind: "agent.created",
                task_id: None,
                actor: Some(actor.name.clone()),
                data: json!({"agent": agent.name, "kind": agent.kind, "role": agent.role}),
            }],
            Wake::default(),
        )
        .await?;
        Ok(agent)
    }

    /// All agents, by name.
    pub async fn list_agents(&self) -> StoreResult<Vec<Agent>> {
        let rows: Vec<AgentRow> =
            sqlx::query_as(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))
                .fetch_all(&self.reader)
                .await?;
        rows.into_iter().map(Agent::try_from).collect()
    }

    /// The principal behind a token hash, if any, with its current liveness status. Answers
    /// from memory until the next async write commits (any of which may change agents).
    pub async fn principal_by_token_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<(Principal, String)>> {
        let generation = self.principals.generation();
        if let Some(known) = self.principals.get(token_hash) {
            return Ok(Some(known));
        }
        let found = self.read_principal(token_hash).await?;
        if let Some(found) = &found {
            self.principals.put(generation, token_hash, found.clone());
        }
        Ok(found)
    }

    async fn read_principal(&self, token_hash: &str) -> StoreResult<Option<(Principal, String)>> {
        let row: Option<AgentRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE token_hash = ?"
        ))
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            let scope = row.scope_task_id;
            let agent = Agent::try_from(row)?;
            Ok((
                Principal {
                    agent_id: Some(agent.id),
                    name: agent.name,
                    role: agent.role,
                    kind: agent.kind,
                    capabilities: agent.capabilities,
                    scope,
                },
                agent.status,
            ))
        })
        .transpose()
    }

    /// Records that an agent was just heard from; an offline agent comes back online (with an event).
    pub async fn touch_agent(&self, agent_id: i64) -> StoreResult<()> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let was: Option<(String, String)> = sqlx::query_as("SELECT name, status FROM agents WHERE id = ?")
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query("UPDATE agents SET last_seen = ?2, status = 'online' WHERE id = ?1")
            .bind(agent_id)
            .bind(now.millis())
            .execute(&mut *tx)
            .await?;
        let mut events = Vec::new();
        if let Some((name, previous)) = was {
            if previous == "offline" {
                events.push(NewEvent {
                    kind: "agent.online",
                    task_id: None,
                    actor: Some(name.clone()),
                    data: json!({"agent": name}),
                });
            }
        }
        self.commit(tx, now, events, Wake::default()).await?;
        Ok(())
    }
}

/// Principals by token hash. Every async write commit forgets them all and moves to a new
/// generation; an answer read during an older generation is not kept.
#[derive(Default)]
pub(super) struct PrincipalCache {
    inner: std::sync::Mutex<Remembered>,
}

/// The generation and the principals (with liveness status) read during it, by token hash.
type Remembered = (u64, std::collections::HashMap<String, (Principal, String)>);

/// Most principals remembered; beyond it the cache starts over.
const PRINCIPALS_KEPT: usize = 10_000;

impl PrincipalCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current generation, to pass to [`PrincipalCache::put`].
    fn generation(&self) -> u64 {
        self.lock().0
    }

    fn get(&self, token_hash: &str) -> Option<(Principal, String)> {
        self.lock().1.get(token_hash).cloned()
    }

    /// Keeps `found`, read during `generation`, unless a write has committed since.
    fn put(&self, generation: u64, token_hash: &str, found: (Principal, String)) {
        let mut inner = self.lock();
        if inner.0 != generation {
            return;
        }
        if inner.1.len() >= PRINCIPALS_KEPT {
            inner.1.clear();
        }
        inner.1.insert(token_hash.to_string(), found);
    }

    /// Forgets everything: agents may have changed.
    pub(super) fn forget(&self) {
        let mut inner = self.lock();
        inner.0 = inner.0.wrapping_add(1);
        inner.1.clear();
    }
}
