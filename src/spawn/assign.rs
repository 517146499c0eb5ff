//! One assignment pass: every available task, most urgent first, goes to a person, to a new
//! agent process, or stays for agents to pull. Spawns wait while the host is overloaded or the
//! caps are full; every decision is a `task.routed` event (written when it changes).

use std::sync::Arc;

use serde::Serialize;

use super::router::{decide, Decision};
use super::supervisor::StartError;
use super::Spawner;

/// Most tasks looked at in one pass.
const PASS_LIMIT: i64 = 500;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AssignOutcome {
    /// Runs started.
    pub spawned: usize,
    /// Tasks sent to people.
    pub to_people: usize,
    /// Tasks left for agents to pull.
    pub to_pull: usize,
    /// Tasks waiting for capacity or a calmer host.
    pub waiting: usize,
}

impl Spawner {
    /// Routes every available task once.
    pub async fn assign(self: &Arc<Self>) -> Result<AssignOutcome, crate::store::StoreError> {
        // One pass at a time, or two passes could each see a free slot and overfill the caps.
        let _pass = self.assigning.lock().await;
        let mut out = AssignOutcome::default();
        let (mut live, mut per_type) = self.store.live_run_counts().await?;
        let overloaded = self
            .host
            .status()
            .latest
            .filter(|s| s.overloaded)
            .map(|s| s.reasons.join("; "));
        // Once with people, a task stays with people until someone edits it: those are not listed.
        for task in self.store.routable_tasks(PASS_LIMIT).await? {
            if *self.shutdown.borrow() {
                break;
            }
            let (agent_type, reason) = match decide(&task, &self.config.routing) {
                Decision::Human(reason) => {
                    self.store.record_routing(task.id, "human", &reason).await?;
                    out.to_people += 1;
                    continue;
                }
                Decision::Pull(reason) => {
                    self.store.record_routing(task.id, "pull", &reason).await?;
                    out.to_pull += 1;
                    continue;
                }
                Decision::Spawn { agent_type, reason } => (agent_type, reason),
            };
            let Some(cfg) = self
                .config
                .agent_types
                .get(&agent_type)
                .filter(|c| !c.command.is_empty())
            else {
                let why = format!("{reason}, but agent type {agent_type} has no command configured");
                self.store.record_spawn_fallback(task.id, &why).await?;
                out.to_people += 1;
                continue;
            };
            let wait = if let Some(why) = &overloaded {
                Some(format!(
                    "waiting to spawn {agent_type}: the host is overloaded ({why})"
                ))
            } else if live >= self.config.spawner.max_concurrent {
                Some(format!(
                    "waiting to spawn {agent_type}: all {} spawn slots are busy",
                    self.config.spawner.max_concurrent
                ))
            } else {
                let running = per_type.get(&agent_type).copied().unwrap_or(0);
                cfg.max_concurrent
                    .filter(|max| running >= *max)
                    .map(|max| format!("waiting to spawn {agent_type}: its {max} slots are busy"))
            };
            if let Some(why) = wait {
                self.store.record_routing(task.id, "wait", &why).await?;
                out.waiting += 1;
                continue;
            }
            match self.start(&task, &agent_type, cfg).await {
                Ok(run) => {
                    live += 1;
                    *per_type.entry(agent_type.clone()).or_default() += 1;
                    self.store
                        .record_routing(
                            task.id,
                            "spawn",
                            &format!("{reason}: run #{} of {agent_type}", run.id),
                        )
                        .await?;
                    out.spawned += 1;
                }
                // Someone claimed it first: nothing to route.
                Err(StartError::Claim(_)) => {}
                Err(StartError::Launch(message)) => {
                    let why = format!("{reason}, but {agent_type} could not start: {message}");
                    self.store.record_spawn_fallback(task.id, &why).await?;
                    out.to_people += 1;
                }
                Err(StartError::Store(e)) => return Err(e),
            }
        }
        Ok(out)
    }
}
