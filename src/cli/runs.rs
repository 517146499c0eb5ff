//! `taskyard runs …`: spawned agent processes — list, show, log (tail or follow), kill.

use clap::Subcommand;
use futures::StreamExt;
use serde_json::{json, Value};

use super::output::{self, say};
use super::{CliResult, ClientArgs, EXIT_ERROR, EXIT_OK};
use crate::client::ClientError;

/// Run subcommands.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs with this status (starting, running, succeeded, failed, timed_out, killed, lost).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this task.
        #[arg(long)]
        task: Option<i64>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one run.
    Show {
        /// Run id.
        id: i64,
    },
    /// Print a run's output.
    Log {
        /// Run id.
        id: i64,
        /// Only the last this many bytes.
        #[arg(long)]
        tail: Option<u64>,
        /// Keep printing new output until the run ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Stop a running run (TERM, then KILL after the grace time).
    Kill {
        /// Run id.
        id: i64,
    },
}

fn run_line(r: &Value) -> String {
    format!(
        "run #{:<5} task #{:<6} {:<20} {:<10} pid {:<7} cpu {:>5}% mem {:>6} MiB  {}",
        r["id"],
        r["task_id"],
        r["agent_type"].as_str().unwrap_or(""),
        r["status"].as_str().unwrap_or(""),
        r["pid"],
        r["cpu_percent"]
            .as_f64()
            .map(|c| format!("{c:.0}"))
            .unwrap_or_else(|| "-".into()),
        r["memory_bytes"]
            .as_i64()
            .map(|m| (m >> 20).to_string())
            .unwrap_or_else(|| "-".into()),
        r["error"].as_str().unwrap_or("")
    )
}

/// The lines `runs show` adds for a run in a worktree: its branch, what the branch held when
/// the run ended, and its worktree while it lives.
fn branch_lines(r: &Value) -> Vec<String> {
    let Some(branch) = r["branch"].as_str() else {
        return Vec::new();
    };
    let base = r["base"].as_str().unwrap_or("?");
    let mut lines = vec![match (r["branch_head"].as_str(), r["branch_commits"].as_i64()) {
        (Some(head), Some(commits)) => {
            format!("branch {branch} at {head} (+{commits} commits beyond {base})")
        }
        _ => format!("branch {branch} (from {base})"),
    }];
    // Once the run is over its worktree is removed; only the branch stays.
    if let Some(worktree) = r["worktree"].as_str().filter(|_| r["ended_at"].is_null()) {
        lines.push(format!("worktree {worktree}"));
    }
    lines
}

/// Runs a runs subcommand.
pub async fn run(global: &ClientArgs, cmd: RunsCommand) -> CliResult {
    let client = global.client();
    match cmd {
        RunsCommand::List { status, task, limit } => {
            let path = output::list_path("/runs", limit, status.as_deref(), task);
            let page = client.get(&path).await?;
            if global.json {
                output::json(&page);
            } else {
                output::none_if_empty(&page, "runs");
                for r in page["items"].as_array().into_iter().flatten() {
                    say!("{}", run_line(r));
                }
            }
        }
        RunsCommand::Show { id } => {
            let r = client.get(&format!("/runs/{id}")).await?;
            if global.json {
                output::json(&r);
            } else {
                say!("{}", run_line(&r));
                for line in branch_lines(&r) {
                    say!("  {line}");
                }
            }
        }
        RunsCommand::Log { id, tail, follow } => {
            let mut path = format!("/api/v1/runs/{id}/log?follow={follow}");
            if let Some(t) = tail {
                path.push_str(&format!("&tail={t}"));
            }
            let mut stream = client.stream(&path).await?;
            use std::io::Write;
            let mut stdout = std::io::stdout();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| ClientError::Decode(format!("log stream broke: {e}")))?;
                let _ = stdout.write_all(&chunk);
                let _ = stdout.flush();
            }
        }
        RunsCommand::Kill { id } => {
            let r = client
                .post(&format!("/runs/{id}/kill"), &json!({}))
                .await?
                .unwrap_or_default();
            if global.json {
                output::json(&r);
            } else {
                say!("stopping run #{id}");
            }
            return Ok(if r.is_null() { EXIT_ERROR } else { EXIT_OK });
        }
    }
    Ok(EXIT_OK)
}
