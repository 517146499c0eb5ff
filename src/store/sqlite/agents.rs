//! Agents on SQLite: registering them, their tokens (kept only as SHA-256 hashes) and liveness,
//! the people among them, and the principals remembered by token hash between changes.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use crate::domain::input::AgentSpec;
use crate::domain::{Agent, Change, NewEvent, Principal, Role};
use crate::store::{Agents, StoreError, StoreResult};

use super::engine::Tx;
use super::lifecycle::release_all_held_by;
use super::rows::{self, json, to_json, AGENT_COLUMNS};
use super::Sqlite;
use crate::store::announce::Announce;

/// Creates the agent `name` or gives it a new token hash, role and scope, inside the caller's
/// change; returns it as a principal.
pub(super) fn upsert_token(
    tx: &mut Tx<'_>,
    name: &str,
    kind: &str,
    role: Role,
    token_hash: &str,
    scope: Option<i64>,
) -> StoreResult<Principal> {
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at, scope_task_id) \
             VALUES (?1, ?2, '[]', ?3, ?4, 'online', ?5, ?6) \
             ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, role = excluded.role, \
                 scope_task_id = excluded.scope_task_id WHERE agents.deactivated_at IS NULL \
             RETURNING id",
        )?
        .query_row(
            params![name, kind, role.as_str(), token_hash, tx.now.millis(), scope],
            |row| row.get(0),
        )
        .optional()?
        .ok_or_else(|| {
            StoreError::conflict(format!("agent {name:?} is deactivated: it gets no new token"))
        })?;
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

/// Agent `id` as it stands inside the caller's change.
fn find_agent(tx: &Tx<'_>, id: i64) -> StoreResult<Agent> {
    let row = tx
        .prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"))?
        .query_row([id], rows::agent)
        .optional()?
        .ok_or_else(|| StoreError::not_found(format!("agent #{id}")))?;
    row
}

#[async_trait::async_trait]
impl Agents for Sqlite {
    async fn create_agent(
        &self,
        spec: &AgentSpec,
        token_hash: &str,
        actor: &Principal,
    ) -> StoreResult<Agent> {
        let (spec, token_hash, actor) = (spec.clone(), token_hash.to_string(), actor.clone());
        self.write(move |tx| {
            let taken = tx
                .prepare_cached("SELECT 1 FROM agents WHERE name = ?1")?
                .exists([&spec.name])?;
            if taken {
                return Err(StoreError::conflict(format!(
                    "an agent named {:?} already exists",
                    spec.name
                )));
            }
            let agent = tx
                .prepare_cached(&format!(
                    "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'online', ?6) RETURNING {AGENT_COLUMNS}"
                ))?
                .query_row(
                    params![
                        spec.name,
                        spec.kind,
                        to_json(&spec.capabilities),
                        spec.role.as_str(),
                        token_hash,
                        tx.now.millis()
                    ],
                    rows::agent,
                )??;
            tx.agents_changed();
            tx.event(NewEvent::general(
                &actor.name,
                Change::AgentCreated {
                    agent: agent.name.clone(),
                    kind: agent.kind.clone(),
                    role: agent.role,
                },
            ));
            Ok(agent)
        })
        .await
    }

    async fn list_agents(&self, finished_runs: bool) -> StoreResult<Vec<Agent>> {
        self.read(move |conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents \
                     WHERE ?1 OR NOT (kind = 'spawned' AND token_hash LIKE 'revoked:%') ORDER BY name"
                ))?
                .query_map([finished_runs], rows::agent)?
                .collect::<Result<Vec<_>, _>>()?;
            found.into_iter().collect()
        })
        .await
    }

    async fn principal_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<(Principal, String)>> {
        let cache = &self.shared.principals;
        let generation = cache.generation();
        if let Some(known) = cache.get(token_hash) {
            return Ok(Some(known));
        }
        let hash = token_hash.to_string();
        let found = self
            .read(move |conn| {
                let row = conn
                    .prepare_cached(&format!(
                        "SELECT {AGENT_COLUMNS} FROM agents WHERE token_hash = ?1"
                    ))?
                    .query_row([hash], rows::principal)
                    .optional()?;
                row.transpose()
            })
            .await?;
        if let Some(found) = &found {
            cache.put(generation, token_hash, found.clone());
        }
        Ok(found)
    }

    async fn touch_agent(&self, agent_id: i64) -> StoreResult<()> {
        self.write(move |tx| {
            let was: Option<(String, String)> = tx
                .prepare_cached("SELECT name, status FROM agents WHERE id = ?1")?
                .query_row([agent_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            tx.prepare_cached("UPDATE agents SET last_seen = ?2, status = 'online' WHERE id = ?1")?
                .execute(params![agent_id, tx.now.millis()])?;
            if let Some((name, _)) = was.filter(|(_, previous)| previous == "offline") {
                tx.event(NewEvent::general(
                    &name,
                    Change::AgentOnline { agent: name.clone() },
                ));
            }
            Ok(())
        })
        .await?;
        self.shared.principals.mark_online(agent_id);
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
        let (name, kind, hash) = (name.to_string(), kind.to_string(), token_hash.to_string());
        self.write(move |tx| upsert_token(tx, &name, &kind, role, &hash, scope))
            .await
    }

    async fn deactivate_agent(&self, id: i64, actor: &Principal) -> StoreResult<(Agent, Vec<i64>)> {
        let actor = actor.clone();
        self.write(move |tx| {
            let agent = find_agent(tx, id)?;
            if agent.status == "deactivated" {
                return Err(StoreError::conflict(format!(
                    "agent {:?} is already deactivated",
                    agent.name
                )));
            }
            tx.prepare_cached(
                "UPDATE agents SET token_hash = 'revoked:' || name, status = 'offline', deactivated_at = ?2 \
                 WHERE id = ?1",
            )?
            .execute(params![id, tx.now.millis()])?;
            tx.tokens_changed();
            let released = release_all_held_by(
                tx,
                &agent.name,
                &actor.name,
                &format!("agent {} was deactivated", agent.name),
            )?;
            tx.event(NewEvent::general(
                &actor.name,
                Change::AgentDeactivated {
                    agent: agent.name.clone(),
                    released: released.clone(),
                },
            ));
            Ok((find_agent(tx, id)?, released))
        })
        .await
    }

    async fn replace_agent_token(&self, id: i64, token_hash: &str, actor: &Principal) -> StoreResult<Agent> {
        let (hash, actor) = (token_hash.to_string(), actor.clone());
        self.write(move |tx| {
            let agent = find_agent(tx, id)?;
            if agent.status == "deactivated" {
                return Err(StoreError::conflict(format!(
                    "agent {:?} is deactivated: its token cannot be renewed",
                    agent.name
                )));
            }
            tx.prepare_cached("UPDATE agents SET token_hash = ?2 WHERE id = ?1")?
                .execute(params![id, hash])?;
            tx.tokens_changed();
            tx.event(NewEvent::general(
                &actor.name,
                Change::AgentTokenRotated {
                    agent: agent.name.clone(),
                },
            ));
            Ok(agent)
        })
        .await
    }

    async fn delete_agent(&self, id: i64, actor: &Principal) -> StoreResult<Agent> {
        let actor = actor.clone();
        self.write(move |tx| {
            let agent = find_agent(tx, id)?;
            // Liveness events are about the agent, not by it. (A search of the history: removing
            // an agent is rare, and whether it acted cannot be told from anything smaller.)
            let acted = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM tasks WHERE created_by = ?1 OR lease_holder = ?1) \
                     OR EXISTS (SELECT 1 FROM events WHERE actor = ?1 AND kind NOT IN ('agent.online', 'agent.offline')) \
                     OR EXISTS (SELECT 1 FROM runs WHERE holder = ?1)",
                )?
                .query_row([&agent.name], |row| row.get::<_, bool>(0))?;
            if acted {
                return Err(StoreError::conflict(format!(
                    "agent {:?} has acted on tasks: its name stays in their history; deactivate it instead",
                    agent.name
                )));
            }
            tx.prepare_cached("DELETE FROM agents WHERE id = ?1")?.execute([id])?;
            tx.tokens_changed();
            tx.event(NewEvent::general(
                &actor.name,
                Change::AgentDeleted {
                    agent: agent.name.clone(),
                },
            ));
            Ok(agent)
        })
        .await
    }

    async fn sync_humans(&self, people: &[(String, Vec<String>)]) -> StoreResult<()> {
        let people = people.to_vec();
        self.write(move |tx| {
            for (name, capabilities) in &people {
                let kind: Option<String> = tx
                    .prepare_cached("SELECT kind FROM agents WHERE name = ?1")?
                    .query_row([name], |row| row.get(0))
                    .optional()?;
                match kind.as_deref() {
                    Some("human") => {
                        tx.execute(
                            "UPDATE agents SET capabilities = ?2 WHERE name = ?1",
                            params![name, to_json(capabilities)],
                        )?;
                    }
                    Some(other) => {
                        return Err(StoreError::conflict(format!(
                            "the person {name:?} cannot be added: an agent of kind {other} has that name"
                        )))
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO agents (name, kind, capabilities, role, token_hash, status, created_at) \
                             VALUES (?1, 'human', ?2, 'agent', ?3, 'offline', ?4)",
                            params![
                                name,
                                to_json(capabilities),
                                format!("person:{}", hex::encode(rand::random::<[u8; 32]>())),
                                tx.now.millis()
                            ],
                        )?;
                    }
                }
            }
            tx.agents_changed();
            Ok(())
        })
        .await
    }

    async fn person(&self, name: &str) -> StoreResult<Principal> {
        let name = name.to_string();
        self.read(move |conn| {
            let row: Option<(i64, String)> = conn
                .prepare_cached("SELECT id, capabilities FROM agents WHERE name = ?1 AND kind = 'human'")?
                .query_row([&name], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let (id, capabilities) = row.ok_or_else(|| StoreError::not_found(format!("person {name:?}")))?;
            Ok(Principal {
                agent_id: Some(id),
                capabilities: json(&format!("capabilities of {name}"), &capabilities)?,
                name,
                role: Role::Agent,
                kind: "human".into(),
                scope: None,
            })
        })
        .await
    }

    async fn mark_silent_agents_offline(&self, silence: Duration) -> StoreResult<Vec<String>> {
        self.write(move |tx| {
            let quiet = i64::try_from(silence.as_millis()).unwrap_or(i64::MAX);
            let names = tx
                .prepare_cached(
                    "UPDATE agents SET status = 'offline' \
                     WHERE status = 'online' AND deactivated_at IS NULL AND COALESCE(last_seen, created_at) < ?1 \
                     RETURNING name",
                )?
                .query_map([tx.now.millis() - quiet], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
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
            Ok(names)
        })
        .await
    }
}
