//! `taskyard notifications …`: the outbox of emails to people.

use clap::Subcommand;
use serde_json::Value;

use super::output::{self, say};
use super::{CliResult, ClientArgs, EXIT_OK};

/// Notification subcommands.
#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// List notifications, newest first.
    List {
        /// Only notifications with this status (queued, sent, failed).
        #[arg(long)]
        status: Option<String>,
        /// Only notifications about this task.
        #[arg(long)]
        task: Option<i64>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

fn line(n: &Value) -> String {
    let task = n["task_id"]
        .as_i64()
        .map(|t| format!("#{t}"))
        .unwrap_or_else(|| "-".into());
    let mut out = format!(
        "#{:<5} {:<7} {:<15} task {:<7} {:<28} tries {:<2} {}",
        n["id"],
        n["status"].as_str().unwrap_or(""),
        n["reason"].as_str().unwrap_or(""),
        task,
        n["to"].as_str().unwrap_or(""),
        n["attempts"],
        n["subject"].as_str().unwrap_or("")
    );
    if let Some(action) = n["action"].as_str() {
        out.push_str(&format!("  [{action}]"));
    }
    if let Some(err) = n["last_error"].as_str().filter(|_| n["status"] != "sent") {
        out.push_str(&format!("\n        last error: {err}"));
    }
    out
}

/// Runs a notifications subcommand.
pub async fn run(global: &ClientArgs, cmd: NotificationsCommand) -> CliResult {
    let client = global.client();
    match cmd {
        NotificationsCommand::List { status, task, limit } => {
            let path = output::list_path("/notifications", limit, status.as_deref(), task);
            let page = client.get(&path).await?;
            if global.json {
                output::json(&page);
            } else {
                output::none_if_empty(&page, "notifications");
                for n in page["items"].as_array().into_iter().flatten() {
                    say!("{}", line(n));
                }
            }
        }
    }
    Ok(EXIT_OK)
}
