//! One assignment pass: every available task, most urgent first, goes to a person, to a new
//! agent process, or stays for agents to pull. Spawns wait while the host is overloaded or the
//! caps are full, and such work stays claimable by agents meanwhile; with no agent type that
//! has a command the spawner is off and urgent work is pull work. Every decision is a
//! `task.routed` event (written when it changes). `explain` says the same in `why`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::AgentTypeConfig;
use crate::domain::{Route, Routed, Status, Task};
use crate::store::{Routing, StoreError, StoreResult};

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
    /// Why spawns wait, when some do (the first reason met).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_because: Option<String>,
}

/// What limits spawning right now: the host and the caps.
struct Capacity {
    /// Live runs over all types.
    live: usize,
    /// Live runs per agent type.
    per_type: HashMap<String, usize>,
    /// Why the host counts as overloaded, if it does.
    overloaded: Option<String>,
}

impl Capacity {
    /// Why a new run of `agent_type` must wait now, if it must, as a sentence.
    fn wait(&self, agent_type: &str, cfg: &AgentTypeConfig, max_concurrent: usize) -> Option<String> {
        if let Some(why) = &self.overloaded {
            return Some(format!("waiting to be spawned: host overloaded ({why})"));
        }
        if self.live >= max_concurrent {
            return Some(format!(
                "waiting for capacity: {}/{max_concurrent} spawn slots busy",
                self.live
            ));
        }
        let running = self.per_type.get(agent_type).copied().unwrap_or(0);
        cfg.max_concurrent
            .filter(|max| running >= *max)
            .map(|max| format!("waiting for capacity: {agent_type} {running}/{max} running"))
    }
}

/// Where a task that should be spawned goes instead, or how it is started.
enum Plan<'a> {
    /// Agents pull it: the spawner is off.
    Pull(String),
    /// To people: nothing can start it.
    Fallback(String),
    /// A run of this type, unless capacity says wait.
    Start(&'a AgentTypeConfig),
}

impl Spawner {
    /// How a task the router would spawn as `agent_type` (for `reason`) is handled.
    fn plan(&self, task: &Task, agent_type: &str, reason: &str) -> Plan<'_> {
        match self
            .config
            .agent_types
            .get(agent_type)
            .filter(|c| !c.command.is_empty())
        {
            Some(cfg) => Plan::Start(cfg),
            None if !self.config.spawner_on() && task.route == Route::Auto => Plan::Pull(format!(
                "{reason}, but the spawner is off (no agent type has a command): agents pull it"
            )),
            None if !self.config.spawner_on() => Plan::Fallback(format!(
                "{reason}, but the spawner is off (no agent type has a command)"
            )),
            None => Plan::Fallback(format!(
                "{reason}, but agent type {agent_type} has no command configured"
            )),
        }
    }

    async fn capacity(&self) -> StoreResult<Capacity> {
        let (live, per_type) = self.store.live_run_counts().await?;
        let overloaded = self
            .host
            .status()
            .latest
            .filter(|s| s.overloaded)
            .map(|s| s.reasons.join("; "));
        Ok(Capacity {
            live,
            per_type,
            overloaded,
        })
    }

    /// Routes every available task once.
    pub async fn assign(self: &Arc<Self>) -> Result<AssignOutcome, StoreError> {
        // One pass at a time, or two passes could each see a free slot and overfill the caps.
        let _pass = self.assigning.lock().await;
        let mut out = AssignOutcome::default();
        let mut capacity = self.capacity().await?;
        // Once with people, a task stays with people until it is edited or rerouted: those are
        // not listed.
        for task in self.store.routable_tasks(PASS_LIMIT).await? {
            if *self.shutdown.borrow() {
                break;
            }
            let (agent_type, reason) = match decide(&task, &self.config.routing) {
                Decision::Human(reason) => {
                    self.store
                        .record_routing(task.id, Routed::Human, &reason, false)
                        .await?;
                    out.to_people += 1;
                    continue;
                }
                Decision::Pull(reason) => {
                    self.store
                        .record_routing(task.id, Routed::Pull, &reason, false)
                        .await?;
                    out.to_pull += 1;
                    continue;
                }
                Decision::Spawn { agent_type, reason } => (agent_type, reason),
            };
            let cfg = match self.plan(&task, &agent_type, &reason) {
                Plan::Pull(why) => {
                    self.store
                        .record_routing(task.id, Routed::Pull, &why, false)
                        .await?;
                    out.to_pull += 1;
                    continue;
                }
                Plan::Fallback(why) => {
                    self.store
                        .record_routing(task.id, Routed::Human, &why, true)
                        .await?;
                    out.to_people += 1;
                    continue;
                }
                Plan::Start(cfg) => cfg,
            };
            if let Some(why) = capacity.wait(&agent_type, cfg, self.config.spawner.max_concurrent) {
                self.store
                    .record_routing(task.id, Routed::Wait, &why, false)
                    .await?;
                out.waiting += 1;
                out.waiting_because.get_or_insert(why);
                continue;
            }
            match self.start(&task, &agent_type, &reason, cfg).await {
                Ok(_) => {
                    capacity.live += 1;
                    *capacity.per_type.entry(agent_type.clone()).or_default() += 1;
                    out.spawned += 1;
                }
                // An agent claimed it first: it is being worked on, and there is no run.
                Err(StartError::Claim(_)) => {}
                Err(StartError::Launch(message)) => {
                    let why = format!("{reason}, but {agent_type} could not start: {message}");
                    self.store
                        .record_routing(task.id, Routed::Human, &why, true)
                        .await?;
                    out.to_people += 1;
                }
                Err(StartError::Store(e)) => return Err(e),
            }
        }
        Ok(out)
    }

    /// What the spawner would do with `task` now, for `why`: a sentence when the task is one it
    /// would spawn (or could not), `None` when spawning is not its business.
    pub async fn explain(&self, task: &Task, routing: Option<&Routing>) -> StoreResult<Option<String>> {
        let with_people = routing.is_some_and(|r| r.decision == Routed::Human);
        if task.status != Status::Available || with_people || task.route == Route::Agent {
            return Ok(None);
        }
        let Decision::Spawn { agent_type, reason } = decide(task, &self.config.routing) else {
            return Ok(None);
        };
        let cfg = match self.plan(task, &agent_type, &reason) {
            Plan::Pull(why) => return Ok(Some(why)),
            Plan::Fallback(why) => {
                return Ok(Some(format!(
                    "{why}: the next assignment pass sends it to people"
                )))
            }
            Plan::Start(cfg) => cfg,
        };
        let capacity = self.capacity().await?;
        Ok(Some(
            match capacity.wait(&agent_type, cfg, self.config.spawner.max_concurrent) {
                Some(why) if task.route == Route::Auto => {
                    format!("{why}; until then the next agent with the required capabilities may claim it")
                }
                Some(why) => why,
                None => format!("{reason}: the next assignment pass starts a run of {agent_type}"),
            },
        ))
    }
}
