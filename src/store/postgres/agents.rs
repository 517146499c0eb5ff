//! Agents on PostgreSQL: registering them, their tokens (kept only as SHA-256 hashes) and
//! liveness, the people among them, and the principals remembered by token hash between
//! changes. Another server sharing the database changes agents without this one hearing of it,
//! so what this server remembers is trusted for a moment only.

use std::time::Duration;

use sqlx::{PgConnection, Row};

use crate::domain::input::AgentSpec;
use crate::domain::{Agent, Change, NewEvent, Principal, Role};
use crate::store::{Agents, StoreError, StoreResult};

use super::lifecycle::release_all_held_by;
use super::rows::{self, json, to_json, AGENT_COLUMNS};
use super::tx::Tx;
use super::Postgres;
use crate::store::announce::Announce;

/// Creates the agent `name` or gives it a new token hash, role and scope, inside the caller's
/// change; returns it as a principal. A deactivated agent is refused.
pub(super) async fn upsert_token(
    tx: &mut Tx,
    name: &str,
    kind: &str,
    role: Role,
    token_hash: &str,
    scope: Option<i64>,
) -> StoreResult<Principal> {
    let now = tx.now.millis();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at, scope_task_id) \
         VALUES ($1, $2, '[]', $3, $4, 'online', $5, $6) \
         ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, role = excluded.role, \
             scope_task_id = excluded.scope_task_id WHERE agents.deactivated_at IS NULL \
         RETURNING id",
    )
    .bind(name)
    .bind(kind)
    .bind(role.as_str())
    .bind(token_hash)
    .bind(now)
    .bind(scope)
    .fetch_optional(tx.db())
    .await?
    .ok_or_else(|| StoreError::conflict(format!("agent {name:?} is deactivated: it gets no new token")))?;
    tx.tokens_changed();
    Ok(Principal {
        agent_id: Some(id),
        name: name.to_string(),
        role,
        kind: kind.to_string(),
        capabilities: Vec::new(),
        scope,
    })
}

/// Agent `id` as it stands inside the caller's change, its row locked until the change ends.
async fn lock_agent(conn: &mut PgConnection, id: i64) -> StoreResult<Agent> {
    let row = sqlx::query(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::not_found(format!("agent #{id}")))?;
    rows::agent(&row)
}

#[async_trait::async_trait]
impl Agents for Postgres {
    async fn create_agent(
        &self,
        spec: &AgentSpec,
        token_hash: &str,
        actor: &Principal,
    ) -> StoreResult<Agent> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        // One statement: of two servers registering the same name at once, one is refused.
        let row = sqlx::query(&format!(
            "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'online', $6) ON CONFLICT (name) DO NOTHING \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(&spec.name)
        .bind(&spec.kind)
        .bind(to_json(&spec.capabilities))
        .bind(spec.role.as_str())
        .bind(token_hash)
        .bind(now)
        .fetch_optional(tx.db())
        .await?
        .ok_or_else(|| StoreError::conflict(format!("an agent named {:?} already exists", spec.name)))?;
        let agent = rows::agent(&row)?;
        tx.agents_changed();
        tx.event(NewEvent::general(
            &actor.name,
            Change::AgentCreated {
                agent: agent.name.clone(),
                kind: agent.kind.clone(),
                role: agent.role,
            },
        ));
        self.commit(tx, agent).await
    }

    async fn list_agents(&self, finished_runs: bool) -> StoreResult<Vec<Agent>> {
        sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents \
             WHERE $1::boolean OR NOT (kind = 'spawned' AND token_hash ILIKE 'revoked:%') ORDER BY name"
        ))
        .bind(finished_runs)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::agent)
        .collect()
    }

    async fn principal_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<(Principal, String)>> {
        let cache = &self.principals;
        let generation = cache.generation();
        if let Some(known) = cache.get(token_hash) {
            return Ok(Some(known));
        }
        let row = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let found = row.map(|row| rows::principal(&row)).transpose()?;
        if let Some(found) = &found {
            cache.put(generation, token_hash, found.clone());
        }
        Ok(found)
    }

    async fn touch_agent(&self, agent_id: i64) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        // Locked first, so of two servers hearing from an offline agent at once only one
        // announces it back online.
        let was = sqlx::query("SELECT name, status FROM agents WHERE id = $1 FOR UPDATE")
            .bind(agent_id)
            .fetch_optional(tx.db())
            .await?;
        let was: Option<(String, String)> = match was {
            Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
            None => None,
        };
        sqlx::query("UPDATE agents SET last_seen = $2, status = 'online' WHERE id = $1")
            .bind(agent_id)
            .bind(now)
            .execute(tx.db())
            .await?;
        if let Some((name, _)) = was.filter(|(_, previous)| previous == "offline") {
            tx.event(NewEvent::general(
                &name,
                Change::AgentOnline { agent: name.clone() },
            ));
        }
        self.commit(tx, ()).await?;
        self.principals.mark_online(agent_id);
        Ok(())
    }

    async fn rotate_agent_token(
        &self,
        name: &str,
        kind: &str,
        role: Role,
        token_hash: &str,
        scope: Option<i64>,
    ) -> StoreResult<Principal> {
        let mut tx = self.begin().await?;
        let principal = upsert_token(&mut tx, name, kind, role, token_hash, scope).await?;
        self.commit(tx, principal).await
    }

    async fn deactivate_agent(&self, id: i64, actor: &Principal) -> StoreResult<(Agent, Vec<i64>)> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        let agent = lock_agent(tx.db(), id).await?;
        if agent.status == "deactivated" {
            return Err(StoreError::conflict(format!(
                "agent {:?} is already deactivated",
                agent.name
            )));
        }
        sqlx::query(
            "UPDATE agents SET token_hash = 'revoked:' || name, status = 'offline', deactivated_at = $2 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(tx.db())
        .await?;
        tx.tokens_changed();
        let released = release_all_held_by(
            &mut tx,
            &agent.name,
            &actor.name,
            &format!("agent {} was deactivated", agent.name),
        )
        .await?;
        tx.event(NewEvent::general(
            &actor.name,
            Change::AgentDeactivated {
                agent: agent.name.clone(),
                released: released.clone(),
            },
        ));
        let agent = lock_agent(tx.db(), id).await?;
        self.commit(tx, (agent, released)).await
    }

    async fn replace_agent_token(&self, id: i64, token_hash: &str, actor: &Principal) -> StoreResult<Agent> {
        let mut tx = self.begin().await?;
        let agent = lock_agent(tx.db(), id).await?;
        if agent.status == "deactivated" {
            return Err(StoreError::conflict(format!(
                "agent {:?} is deactivated: its token cannot be renewed",
                agent.name
            )));
        }
        sqlx::query("UPDATE agents SET token_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(token_hash)
            .execute(tx.db())
            .await?;
        tx.tokens_changed();
        tx.event(NewEvent::general(
            &actor.name,
            Change::AgentTokenRotated {
                agent: agent.name.clone(),
            },
        ));
        self.commit(tx, agent).await
    }

    async fn delete_agent(&self, id: i64, actor: &Principal) -> StoreResult<Agent> {
        let mut tx = self.begin().await?;
        let agent = lock_agent(tx.db(), id).await?;
        // Liveness events are about the agent, not by it. (A search of the history: removing
        // an agent is rare, and whether it acted cannot be told from anything smaller.)
        let acted: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE created_by = $1 OR lease_holder = $1) \
             OR EXISTS (SELECT 1 FROM events WHERE actor = $1 AND kind NOT IN ('agent.online', 'agent.offline')) \
             OR EXISTS (SELECT 1 FROM runs WHERE holder = $1)",
        )
        .bind(&agent.name)
        .fetch_one(tx.db())
        .await?;
        if acted {
            return Err(StoreError::conflict(format!(
                "agent {:?} has acted on tasks: its name stays in their history; deactivate it instead",
                agent.name
            )));
        }
        sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id)
            .execute(tx.db())
            .await?;
        tx.tokens_changed();
        tx.event(NewEvent::general(
            &actor.name,
            Change::AgentDeleted {
                agent: agent.name.clone(),
            },
        ));
        self.commit(tx, agent).await
    }

    async fn sync_humans(&self, people: &[(String, Vec<String>)]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        for (name, capabilities) in people {
            // One statement per person: servers starting together do not both add them.
            let person: Option<i64> = sqlx::query_scalar(
                "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at) \
                 VALUES ($1, 'human', $2, 'agent', $3, 'offline', $4) \
                 ON CONFLICT (name) DO UPDATE SET capabilities = excluded.capabilities \
                     WHERE agents.kind = 'human' \
                 RETURNING id",
            )
            .bind(name)
            .bind(to_json(capabilities))
            .bind(format!("person:{}", hex::encode(rand::random::<[u8; 32]>())))
            .bind(now)
            .fetch_optional(tx.db())
            .await?;
            if person.is_none() {
                let other: String = sqlx::query_scalar("SELECT kind FROM agents WHERE name = $1")
                    .bind(name)
                    .fetch_one(tx.db())
                    .await?;
                return Err(StoreError::conflict(format!(
                    "the person {name:?} cannot be added: an agent of kind {other} has that name"
                )));
            }
        }
        tx.agents_changed();
        self.commit(tx, ()).await
    }

    async fn person(&self, name: &str) -> StoreResult<Principal> {
        let row = sqlx::query("SELECT id, capabilities FROM agents WHERE name = $1 AND kind = 'human'")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("person {name:?}")))?;
        let id: i64 = row.try_get(0)?;
        let capabilities: String = row.try_get(1)?;
        Ok(Principal {
            agent_id: Some(id),
            capabilities: json(&format!("capabilities of {name}"), &capabilities)?,
            name: name.to_string(),
            role: Role::Agent,
            kind: "human".into(),
            scope: None,
        })
    }

    async fn mark_silent_agents_offline(&self, silence: Duration) -> StoreResult<Vec<String>> {
        let mut tx = self.begin().await?;
        let quiet = i64::try_from(silence.as_millis()).unwrap_or(i64::MAX);
        let since = tx.now.millis().saturating_sub(quiet);
        // Conditional on the status: of two servers sweeping at once, each agent goes offline once.
        let names: Vec<String> = sqlx::query_scalar(
            "UPDATE agents SET status = 'offline' \
             WHERE status = 'online' AND deactivated_at IS NULL AND COALESCE(last_seen, created_at) < $1 \
             RETURNING name",
        )
        .bind(since)
        .fetch_all(tx.db())
        .await?;
        if !names.is_empty() {
            tx.agents_changed();
        }
        tx.events(names.iter().map(|name| {
            NewEvent::general(
                "loop:agent-liveness",
                Change::AgentOffline {
                    agent: name.clone(),
                    silent_for_seconds: silence.as_secs(),
                },
            )
        }));
        self.commit(tx, names).await
    }
}
