//! The body that registers an agent.

use serde::Deserialize;
use utoipa::ToSchema;

use super::{capabilities, limits, line, reject, word};
use crate::domain::{InputError, Role};

/// Body of `POST /agents`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Unique name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// `claude-code`, `cursor`, `codex`, `script`, … (default `script`).
    pub kind: Option<String>,
    /// What it can do.
    pub capabilities: Option<Vec<String>>,
    /// admin, agent (default) or viewer.
    pub role: Option<Role>,
}

/// A checked agent to create.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Role.
    pub role: Role,
}

/// Checks an agent's name: letters, digits, `.`, `_`, `-`, `@`; not reserved.
pub fn agent_name(name: &str) -> Result<String, String> {
    let name = line("name", name, limits::NAME, false).map_err(|e| e.message)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err("use letters, digits, '.', '_', '-' and '@' only".into());
    }
    if name.starts_with("run-") || name.starts_with("loop-") {
        return Err("names starting with run- or loop- are kept for spawned runs and loops".into());
    }
    if name == crate::domain::agent::ADMIN_NAME {
        return Err("\"admin\" is reserved for the server's admin token".into());
    }
    Ok(name)
}

impl CreateAgent {
    /// Checks the agent.
    pub fn parse(self) -> Result<AgentSpec, InputError> {
        let name = agent_name(&self.name).map_err(|message| reject("name", message))?;
        Ok(AgentSpec {
            name,
            kind: self
                .kind
                .as_deref()
                .map(|k| word("kind", k))
                .transpose()?
                .unwrap_or_else(|| "script".into()),
            capabilities: capabilities("capabilities", self.capabilities.as_deref().unwrap_or(&[]))?,
            role: self.role.unwrap_or(Role::Agent),
        })
    }
}
