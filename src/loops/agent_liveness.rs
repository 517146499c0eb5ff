//! `agent-liveness`: agents silent for longer than `offline_after` go `offline` (with an
//! `agent.offline` event); their next authenticated call brings them back `online`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{settings, Loop, LoopContext, Outcome, Span};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentLiveness {
    /// Silence after which an agent counts as offline.
    #[serde(default = "default_offline_after")]
    offline_after: Span,
}

fn default_offline_after() -> Span {
    Span(Duration::from_secs(300))
}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<AgentLiveness>(table)?))
}

impl Loop for AgentLiveness {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let names = ctx.store.mark_silent_agents_offline(self.offline_after.0).await?;
            Ok(Outcome::new(
                format!("{} agents went offline", names.len()),
                json!({"offline": names}),
            ))
        })
    }
}
