//! `stall-detector`: in-progress tasks whose lease is alive but which reported no progress for
//! `stall_after` are flagged stalled (a `task.stalled` event; `why` shows it). Progress clears it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{settings, Loop, LoopContext, Outcome, Span};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StallDetector {
    /// Quiet time after which a task counts as stalled.
    #[serde(default = "default_stall_after")]
    stall_after: Span,
}

fn default_stall_after() -> Span {
    Span(Duration::from_secs(30 * 60))
}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<StallDetector>(table)?))
}

impl Loop for StallDetector {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let ids = ctx.store.flag_stalled_tasks(self.stall_after.0).await?;
            Ok(Outcome::new(
                format!("{} tasks newly stalled", ids.len()),
                json!({"stalled": ids}),
            ))
        })
    }
}
