//! `lease-reaper`: expired leases go back to `available`, or to `failed` once their attempts
//! are used up, each with a `task.lease_expired` event; then the runs of nodes that stopped
//! answering are settled once their leases have ended.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{settings, Loop, LoopContext, Outcome};

/// No settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseReaper {}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<LeaseReaper>(table)?))
}

impl Loop for LeaseReaper {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let reaped = ctx.store.reap_expired_leases().await?;
            let orphans = ctx.spawner.settle_orphans().await?;
            let summary = match orphans {
                0 => format!("{reaped} expired leases returned"),
                n => format!("{reaped} expired leases returned; {n} runs of silent nodes settled"),
            };
            Ok(Outcome::new(
                summary,
                json!({"reaped": reaped, "orphaned_runs": orphans}),
            ))
        })
    }
}
