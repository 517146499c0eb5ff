//! Scheduled loops that keep the registry healthy. Each kind lives in its own file with a
//! `build` (settings → loop) and a `run_once` that tests call directly; adding a kind is one new
//! file and one line in [`KINDS`]. Definitions are read in `definition.rs`, scheduling and run
//! records live in `scheduler.rs`.

mod agent_liveness;
mod command;
mod definition;
mod dependency_release;
mod inbox;
mod lease_reaper;
mod retention_backup;
mod scheduler;
mod stall_detector;
pub mod system_status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::config::Config;
use crate::store::Store;

pub use definition::{builtin_definitions, load_definitions, LoopDef, LoopDefError, Schedule};
pub use scheduler::{LoopInfo, Loops, RunNowError};
pub use system_status::HostMonitor;

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
    pub host: Arc<HostMonitor>,
}

/// A loop kind, configured: it runs once per tick.
pub trait Loop: Send + Sync {
    /// Does one round of work.
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>>;
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

/// A duration written as `30s`, `5m`, `2h`, `1d` (or a number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    /// Parses `30s`, `5m`, `2h`, `1d`, `500ms`.
    pub fn parse(text: &str) -> Result<Span, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 2h or 1d"))?;
        let secs = match unit.trim() {
            "ms" => return Ok(Span(Duration::from_millis(n))),
            "" | "s" | "sec" | "secs" | "seconds" => n,
            "m" | "min" | "mins" | "minutes" => n * 60,
            "h" | "hour" | "hours" => n * 3_600,
            "d" | "day" | "days" => n * 86_400,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use ms, s, m, h or d"
                ))
            }
        };
        Ok(Span(Duration::from_secs(secs)))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Ok(Span(Duration::from_secs(s))),
            Raw::Text(t) => Span::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(Span::parse("30s"), Ok(Span(Duration::from_secs(30))));
        assert_eq!(Span::parse("5m"), Ok(Span(Duration::from_secs(300))));
        assert_eq!(Span::parse("2h"), Ok(Span(Duration::from_secs(7_200))));
        assert_eq!(Span::parse("250ms"), Ok(Span(Duration::from_millis(250))));
        assert!(Span::parse("soon").is_err());
        assert!(Span::parse("5 fortnights").is_err());
    }

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
