//! `taskyard agent …`: register agents and list them.

use clap::Subcommand;
use serde_json::{json, Value};

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
    }
    Ok(EXIT_OK)
}
