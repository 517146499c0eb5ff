//! Request bodies and their validation: raw JSON shapes become checked values at the edge,
//! so the store never re-checks them. Every limit on input lives here; the bodies live in
//! one file per resource.

mod agent;
mod json;
mod lease;
mod reservation;
mod task;

pub use agent::{agent_name, AgentSpec, CreateAgent};
pub use json::{named_field, parse_json, JsonError};
pub use lease::{
    BlockTask, ClaimNext, ClaimNextSpec, ClaimTask, CompleteSpec, CompleteTask, FailTask, NoteBody,
    ProgressSpec, ReleaseTask, ReportProgress,
};
pub use reservation::{ReleasePaths, ReservePaths, ReserveSpec};
pub use task::{CreateBatch, CreateTask, PatchTask, TaskPatch, TaskSpec};

use serde::{Deserialize, Deserializer};

use super::{InputError, TaskRef};

/// Limits on what a client may send.
pub mod limits {
    /// Longest title, in characters.
    pub const TITLE: usize = 500;
    /// Longest description (Markdown), in bytes.
    pub const DESCRIPTION: usize = 64 * 1024;
    /// Longest key.
    pub const KEY: usize = 200;
    /// Longest project name.
    pub const PROJECT: usize = 100;
    /// Longest kind, capability, agent kind.
    pub const WORD: usize = 64;
    /// Most capabilities on a task or agent.
    pub const CAPABILITIES: usize = 32;
    /// Most acceptance criteria.
    pub const CRITERIA: usize = 100;
    /// Longest acceptance criterion.
    pub const CRITERION: usize = 2_000;
    /// Most dependencies.
    pub const DEPENDS_ON: usize = 100;
    /// Longest note, reason.
    pub const NOTE: usize = 8 * 1024;
    /// Longest completion summary.
    pub const SUMMARY: usize = 64 * 1024;
    /// Most deliverables.
    pub const DELIVERABLES: usize = 100;
    /// Most tasks in one batch.
    pub const BATCH: usize = 1_000;
    /// Longest agent name.
    pub const NAME: usize = 100;
    /// Most projects in a claim-next filter.
    pub const PROJECTS: usize = 100;
    /// Longest long-poll wait, seconds.
    pub const WAIT_SECONDS: u64 = 60;
    /// Lease length bounds, seconds.
    pub const LEASE_SECONDS: (u64, u64) = (1, 86_400);
    /// Largest max_attempts.
    pub const MAX_ATTEMPTS: i64 = 100;
}

fn reject(field: &str, message: impl Into<String>) -> InputError {
    InputError::new(field, message)
}

/// A single-line text: trimmed, non-empty unless `allow_empty`, no control characters.
fn line(field: &str, value: &str, max: usize, allow_empty: bool) -> Result<String, InputError> {
    let value = value.trim();
    if !allow_empty && value.is_empty() {
        return Err(reject(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(reject(field, format!("longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(reject(field, "must not contain control characters"));
    }
    Ok(value.to_string())
}

/// Free text (Markdown, notes): newlines and tabs allowed, other control characters not.
fn text(field: &str, value: &str, max_bytes: usize) -> Result<String, InputError> {
    if value.len() > max_bytes {
        return Err(reject(field, format!("longer than {max_bytes} bytes")));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(reject(
            field,
            "must not contain control characters other than newlines and tabs",
        ));
    }
    Ok(value.to_string())
}

/// A lowercase word: `[a-z0-9][a-z0-9._+-]*`, as used for kinds and capabilities.
pub fn word(field: &str, value: &str) -> Result<String, InputError> {
    let value = value.trim().to_ascii_lowercase();
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if !first_ok || !rest_ok {
        return Err(reject(
            field,
            format!("{value:?} is not a lowercase word (letters, digits, '.', '_', '+', '-')"),
        ));
    }
    if value.len() > limits::WORD {
        return Err(reject(field, format!("longer than {} characters", limits::WORD)));
    }
    Ok(value)
}

/// A list of capabilities: lowercase words, deduplicated, order kept.
pub fn capabilities(field: &str, values: &[String]) -> Result<Vec<String>, InputError> {
    if values.len() > limits::CAPABILITIES {
        return Err(reject(
            field,
            format!("more than {} capabilities", limits::CAPABILITIES),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let cap = word(&format!("{field}[{i}]"), value)?;
        if !out.contains(&cap) {
            out.push(cap);
        }
    }
    Ok(out)
}

fn lease_seconds(field: &str, value: Option<u64>) -> Result<Option<u64>, InputError> {
    let (lo, hi) = limits::LEASE_SECONDS;
    match value {
        Some(s) if !(lo..=hi).contains(&s) => {
            Err(reject(field, format!("must be between {lo} and {hi} seconds")))
        }
        other => Ok(other),
    }
}

fn fence(value: i64) -> Result<i64, InputError> {
    if value < 1 {
        return Err(reject(
            "fence",
            "must be the positive fence returned by the claim",
        ));
    }
    Ok(value)
}

impl schemars::JsonSchema for TaskRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TaskRef".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["integer", "string"],
            "minimum": 1,
            "description": "a task's id (a positive integer) or its key (a string)"
        })
    }
}

impl<'de> Deserialize<'de> for TaskRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => n
                .as_i64()
                .filter(|id| *id > 0)
                .map(TaskRef::Id)
                .ok_or_else(|| serde::de::Error::custom("a task id must be a positive integer")),
            serde_json::Value::String(s) => Ok(TaskRef::parse(&s)),
            _ => Err(serde::de::Error::custom(
                "expected a task id (integer) or key (string)",
            )),
        }
    }
}
