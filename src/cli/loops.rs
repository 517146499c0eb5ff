//! `taskyard loops …`: list the scheduled loops, or run one now.

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{self, say};
use super::{CliResult, ClientArgs, EXIT_ERROR, EXIT_OK};

/// Loop subcommands.
#[derive(Debug, Subcommand)]
pub enum LoopsCommand {
    /// List loops with their schedule, last and next run.
    List,
    /// Run a loop now and print its run record.
    Run {
        /// The loop's name.
        name: String,
    },
}

fn run_line(run: &Value) -> String {
    if run.is_null() {
        return "never ran".into();
    }
    format!(
        "{} {} {}",
        run["finished_at"].as_str().unwrap_or(""),
        if run["ok"] == json!(true) { "ok" } else { "FAILED" },
        run["summary"].as_str().unwrap_or("")
    )
}

/// Runs a loops subcommand.
pub async fn run(global: &ClientArgs, cmd: LoopsCommand) -> CliResult {
    let client = global.client();
    match cmd {
        LoopsCommand::List => {
            let page = client.get("/loops").await?;
            if global.json {
                output::json(&page);
            } else {
                output::none_if_empty(&page, "loops");
                for l in page["items"].as_array().into_iter().flatten() {
                    say!(
                        "{:<20} {:<18} {:<16} {:<8} next {}  last: {}",
                        l["name"].as_str().unwrap_or(""),
                        l["kind"].as_str().unwrap_or(""),
                        l["schedule"].as_str().unwrap_or(""),
                        if l["enabled"] == json!(true) {
                            "enabled"
                        } else {
                            "disabled"
                        },
                        l["next_run_at"].as_str().unwrap_or("-"),
                        run_line(&l["last_run"])
                    );
                }
            }
            Ok(EXIT_OK)
        }
        LoopsCommand::Run { name } => {
            let run = client
                .post(&format!("/loops/{name}/run"), &json!({}))
                .await?
                .unwrap_or_default();
            if global.json {
                output::json(&run);
            } else {
                say!("{name}: {}", run_line(&run));
            }
            Ok(if run["ok"] == json!(true) {
                EXIT_OK
            } else {
                EXIT_ERROR
            })
        }
    }
}
