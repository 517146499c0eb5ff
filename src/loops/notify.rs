//! `notify`: sends the outbox. Queues notifications for events that need a person, then sends
//! what is due, retrying with backoff. Runs on its schedule and at once when something to tell
//! appears.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{settings, Loop, LoopContext, Outcome};

/// No settings: see `[notify]` in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Notify {}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<Notify>(table)?))
}

impl Loop for Notify {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let done = ctx.notifier.dispatch().await?;
            Ok(Outcome::new(
                format!(
                    "{} queued, {} sent, {} to retry, {} failed",
                    done.queued, done.sent, done.retrying, done.failed
                ),
                json!(done),
            ))
        })
    }

    fn woken_by_outbox(&self) -> bool {
        true
    }
}
