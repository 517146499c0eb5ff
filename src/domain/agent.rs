//! Agents (named identities with a role and capabilities) and the principal a request acts as.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Timestamp;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read tasks, create tasks and subtasks, claim and act on its own leases.
    Agent,
    /// Everything.
    Admin,
}

impl Role {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "agent" => Ok(Role::Agent),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}; use admin, agent or viewer")),
        }
    }
}

/// A registered agent as the API shows it (never with its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Agent {
    /// Server-assigned id.
    pub id: i64,
    /// Unique name; shown as the lease holder.
    pub name: String,
    /// `claude-code`, `cursor`, `codex`, `script`, `human`, …
    pub kind: String,
    /// What it can do; claim-next matches task capabilities against these.
    pub capabilities: Vec<String>,
    /// admin, agent or viewer.
    pub role: Role,
    /// `online`, `offline`, or `deactivated` (its token no longer works).
    pub status: String,
    /// Last authenticated call.
    pub last_seen: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The agent's id; `None` for the built-in admin token.
    pub agent_id: Option<i64>,
    /// The name leases are held under.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Its kind (`human` for people).
    pub kind: String,
    /// Its declared capabilities.
    pub capabilities: Vec<String>,
    /// For a spawned run's token: the task it may act on (with its subtasks); `None` = unscoped.
    pub scope: Option<i64>,
}

/// The name the built-in admin token acts under.
pub const ADMIN_NAME: &str = "admin";

impl Principal {
    /// The holder of the server's admin token.
    pub fn admin() -> Self {
        Self {
            agent_id: None,
            name: ADMIN_NAME.to_string(),
            role: Role::Admin,
            kind: "admin".to_string(),
            capabilities: Vec::new(),
            scope: None,
        }
    }

    /// True for admins.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// True for admins and people: they may take work meant for a person and lift blocks.
    pub fn is_person(&self) -> bool {
        self.is_admin() || self.kind == "human"
    }

    /// True when this principal may act on a lease held by `holder`.
    pub fn may_act_for(&self, holder: &str) -> bool {
        self.is_admin() || self.name == holder
    }
}
