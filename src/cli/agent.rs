//! `taskyard agent …`: register agents, list them, deactivate them, rotate their tokens, and
//! remove those that never acted.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{ApiProblem, Client, ClientError};

use super::output::{self, say};
use super::{CliResult, ClientArgs, EXIT_OK};

/// Agent subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register an agent and print its token (shown only once).
    Add {
        /// Unique name.
        name: String,
        /// claude-code, cursor, codex, script, human, …
        #[arg(long, short)]
        kind: Option<String>,
        /// Capability (repeatable).
        #[arg(long = "capability", short = 'c')]
        capabilities: Vec<String>,
        /// admin, agent or viewer.
        #[arg(long)]
        role: Option<String>,
    },
    /// List agents (the agents of spawned runs that are over only with --all; `runs list` lists runs).
    List {
        /// Include the agents of finished spawned runs.
        #[arg(long)]
        all: bool,
    },
    /// Deactivate an agent (admin): its token stops working and its leases are released.
    Deactivate {
        /// The agent's name or id.
        agent: String,
    },
    /// Give an agent a new token (admin) and print it; the old token stops working.
    Rotate {
        /// The agent's name or id.
        agent: String,
    },
    /// Remove an agent that never acted (admin).
    Remove {
        /// The agent's name or id.
        agent: String,
    },
}

/// The id of the agent named `agent`, or, when no agent has that name and it is a number, of
/// the agent with that id (names win: a name may be all digits).
async fn agent_id(client: &Client, agent: &str) -> Result<i64, ClientError> {
    let page = client.get("/agents?all=true").await?;
    let agents = page["items"].as_array().cloned().unwrap_or_default();
    agents
        .iter()
        .find(|a| a["name"] == agent)
        .or_else(|| {
            let id = agent.parse::<i64>().ok()?;
            agents.iter().find(|a| a["id"] == id)
        })
        .and_then(|a| a["id"].as_i64())
        .ok_or_else(|| {
            ClientError::Api(ApiProblem {
                status: 404,
                code: "not_found".into(),
                detail: format!("no agent named {agent:?} (nor with that id)"),
                field: None,
            })
        })
}

/// Runs an agent subcommand.
pub async fn run(global: &ClientArgs, cmd: AgentCommand) -> CliResult {
    let client = global.client();
    match cmd {
        AgentCommand::Add {
            name,
            kind,
            capabilities,
            role,
        } => {
            let mut body = json!({"name": name, "capabilities": capabilities});
            if let Some(kind) = kind {
                body["kind"] = json!(kind);
            }
            if let Some(role) = role {
                body["role"] = json!(role);
            }
            let created = client.post("/agents", &body).await?.unwrap_or_default();
            if global.json {
                output::json(&created);
            } else {
                let agent = &created["agent"];
                say!(
                    "agent {} ({}, {}) created",
                    agent["name"].as_str().unwrap_or(""),
                    agent["kind"].as_str().unwrap_or(""),
                    agent["role"].as_str().unwrap_or("")
                );
                say!("token: {}", created["token"].as_str().unwrap_or(""));
                say!("(shown only now; only its hash is stored)");
            }
        }
        AgentCommand::List { all } => {
            let page = client.get(&format!("/agents?all={all}")).await?;
            if global.json {
                output::json(&page);
            } else {
                output::none_if_empty(&page, "agents");
                for agent in page["items"].as_array().into_iter().flatten() {
                    let caps: Vec<&str> = agent["capabilities"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    say!(
                        "{:<24} {:<12} {:<7} {:<8} last seen {}  [{}]",
                        agent["name"].as_str().unwrap_or(""),
                        agent["kind"].as_str().unwrap_or(""),
                        agent["role"].as_str().unwrap_or(""),
                        agent["status"].as_str().unwrap_or(""),
                        agent["last_seen"].as_str().unwrap_or("never"),
                        caps.join(", ")
                    );
                }
            }
        }
        AgentCommand::Deactivate { agent } => {
            let id = agent_id(&client, &agent).await?;
            let done = client
                .post(&format!("/agents/{id}/deactivate"), &json!({}))
                .await?
                .unwrap_or_default();
            if global.json {
                output::json(&done);
            } else {
                let released: Vec<String> = done["released"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|id| format!("#{id}"))
                    .collect();
                say!(
                    "agent {} deactivated; its token no longer works",
                    done["agent"]["name"].as_str().unwrap_or("")
                );
                match released.is_empty() {
                    true => say!("it held no leases"),
                    false => say!("released: {}", released.join(", ")),
                }
            }
        }
        AgentCommand::Rotate { agent } => {
            let id = agent_id(&client, &agent).await?;
            let rotated = client
                .post(&format!("/agents/{id}/rotate-token"), &json!({}))
                .await?
                .unwrap_or_default();
            if global.json {
                output::json(&rotated);
            } else {
                say!(
                    "agent {} has a new token; the old one no longer works",
                    rotated["agent"]["name"].as_str().unwrap_or("")
                );
                say!("token: {}", rotated["token"].as_str().unwrap_or(""));
                say!("(shown only now; only its hash is stored)");
            }
        }
        AgentCommand::Remove { agent } => {
            let id = agent_id(&client, &agent).await?;
            client
                .call::<Value>(Method::DELETE, &format!("/agents/{id}"), None::<&Value>)
                .await?;
            if global.json {
                output::json(&json!({"removed": id}));
            } else {
                say!("agent {agent} removed");
            }
        }
    }
    Ok(EXIT_OK)
}
