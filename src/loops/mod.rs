//! Scheduled loops that keep the registry healthy. Each kind lives in its own file with a
//! `build` (settings → loop) and a `run_once` that tests call directly; adding a kind is one new
//! file and one line in [`KINDS`]. Definitions are read in `definition.rs`, scheduling and run
//! records live in `scheduler.rs`.

mod agent_liveness;
mod assignment;
mod command;
mod definition;
mod dependency_release;
mod digest;
mod inbox;
mod lease_reaper;
mod notify;
mod retention_backup;
mod scheduler;
mod stall_detector;
mod system_status;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::config::Config;
pub use crate::domain::time::Span;
use crate::store::Store;

pub use definition::{builtin_definitions, load_definitions, LoopDef, LoopDefError, Schedule};
pub use scheduler::{LoopInfo, Loops, RunNowError};

/// What one run did, for its record and the `loop.ran` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// One line for people.
    pub summary: String,
    /// Details for machines.
    pub details: serde_json::Value,
}

impl Outcome {
    /// An outcome with a summary and details.
    pub fn new(summary: impl Into<String>, details: serde_json::Value) -> Self {
        Self {
            summary: summary.into(),
            details,
        }
    }
}

/// What a loop run may use.
#[derive(Clone)]
pub struct LoopContext {
    /// The registry.
    pub store: Store,
    /// The effective config.
    pub config: Arc<Config>,
    /// The data folder.
    pub data_dir: PathBuf,
    /// The URL programs started by loops use to reach this server.
    pub url: String,
    /// Host CPU, memory and disk, as sampled by the system-status loop.
    pub host: Arc<crate::host::HostMonitor>,
    /// Starts and supervises agent processes.
    pub spawner: Arc<crate::spawn::Spawner>,
    /// Queues and sends emails to people.
    pub notifier: Arc<crate::notify::Notifier>,
    /// This node among the nodes: whether it leads.
    pub cluster: Arc<crate::cluster::Membership>,
}

/// A loop kind, configured: it runs once per tick.
pub trait Loop: Send + Sync {
    /// Does one round of work.
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>>;

    /// True for loops that also run at once whenever new or returned work appears.
    fn woken_by_work(&self) -> bool {
        false
    }

    /// True for loops that also run at once whenever something may need telling a person.
    fn woken_by_outbox(&self) -> bool {
        false
    }
}

/// Builds a configured loop of one kind from the loop's name and its settings table.
type Builder = fn(&str, &toml::Table) -> Result<Arc<dyn Loop>, String>;

/// Every built-in kind: its name and its builder.
const KINDS: &[(&str, Builder)] = &[
    ("system-status", system_status::build),
    ("agent-liveness", agent_liveness::build),
    ("lease-reaper", lease_reaper::build),
    ("dependency-release", dependency_release::build),
    ("stall-detector", stall_detector::build),
    ("retention-backup", retention_backup::build),
    ("inbox", inbox::build),
    ("command", command::build),
    ("assignment", assignment::build),
    ("notify", notify::build),
    ("digest", digest::build),
];

/// The names of the built-in kinds.
pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|(name, _)| *name).collect()
}

/// Builds the loop `name` of `kind` from its settings; errors name the offending setting.
pub fn build(name: &str, kind: &str, settings: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    let (_, builder) = KINDS
        .iter()
        .find(|(name, _)| *name == kind)
        .ok_or_else(|| format!("unknown kind {kind:?}; the kinds are {}", kind_names().join(", ")))?;
    builder(name, settings)
}

/// Reads a kind's settings (unknown keys are refused).
fn settings<S: DeserializeOwned>(table: &toml::Table) -> Result<S, String> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_builds_with_defaults_and_refuses_unknown_settings() {
        for kind in kind_names() {
            let mut table = toml::Table::new();
            if kind == "command" {
                table.insert("command".into(), toml::Value::Array(vec!["true".into()]));
            }
            assert!(build("t", kind, &table).is_ok(), "{kind}");
            table.insert("no_such_setting".into(), toml::Value::Boolean(true));
            let err = build("t", kind, &table).err().unwrap_or_default();
            assert!(err.contains("no_such_setting"), "{kind}: {err}");
        }
        assert!(build("t", "teleport", &toml::Table::new()).is_err());
    }
}
