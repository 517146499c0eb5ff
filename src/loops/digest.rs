//! `digest`: queues one email per person with their waiting, blocked and recently failed
//! tasks (at most one per person and day; the notify loop sends it).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{settings, Loop, LoopContext, Outcome};
use crate::domain::Timestamp;

/// No settings: the schedule says when (default 08:00 UTC every day).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Digest {}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<Digest>(table)?))
}

impl Loop for Digest {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let done = ctx.notifier.queue_digests(Timestamp::now()).await?;
            Ok(Outcome::new(
                format!("{} digests queued covering {} tasks", done.queued, done.tasks),
                json!(done),
            ))
        })
    }
}
