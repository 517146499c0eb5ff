//! `dependency-release`: a safety net that settles pending tasks whose dependencies finished.
//! The main path is inline: completing a task releases its dependents in the same transaction.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{settings, Loop, LoopContext, Outcome};

/// No settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DependencyRelease {}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<DependencyRelease>(table)?))
}

impl Loop for DependencyRelease {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let (released, blocked) = ctx.store.settle_pending().await?;
            Ok(Outcome::new(
                format!("{released} pending tasks released, {blocked} blocked"),
                json!({"released": released, "blocked": blocked}),
            ))
        })
    }
}
