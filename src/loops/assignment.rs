//! `assignment`: routes available work — to people, to new agent processes, or left for agents
//! to pull (see `spawn::assign`). Runs on its schedule and at once whenever work appears.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{settings, Loop, LoopContext, Outcome};

/// No settings: routing lives in `[routing]`, `[spawner]` and `[agent_types]` of the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assignment {}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<Assignment>(table)?))
}

impl Loop for Assignment {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let done = ctx.spawner.assign().await?;
            Ok(Outcome::new(
                format!(
                    "{} spawned, {} with people, {} left to pull, {} waiting",
                    done.spawned, done.to_people, done.to_pull, done.waiting
                ),
                json!(done),
            ))
        })
    }

    fn woken_by_work(&self) -> bool {
        true
    }
}
