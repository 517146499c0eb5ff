//! `taskyard reserve …` and `taskyard reservations …`: path reservations under a lease, for
//! shell-based agents (the task and fence default to `$TASKYARD_TASK_ID` and `$TASKYARD_FENCE`).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::output::{self, say};
use super::{CliResult, ClientArgs, EXIT_OK};
use crate::client::ClientError;

/// `taskyard reserve PATTERN…`.
#[derive(Debug, clap::Args)]
pub struct ReserveArgs {
    /// Glob patterns relative to the repository's root, e.g. 'src/auth/**' (quote them).
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Task id or key (default: $TASKYARD_TASK_ID).
    #[arg(long, env = "TASKYARD_TASK_ID")]
    task: String,
    /// The fence from the claim (default: $TASKYARD_FENCE).
    #[arg(long, env = "TASKYARD_FENCE")]
    fence: i64,
    /// Shared: other shared reservations may overlap it (default: exclusive).
    #[arg(long)]
    shared: bool,
}

/// `taskyard reservations …`.
#[derive(Debug, Subcommand)]
pub enum ReservationsCommand {
    /// List live reservations: all, those overlapping a path, or one task's.
    List {
        /// A path or a pattern: only reservations that overlap it.
        #[arg(long)]
        path: Option<String>,
        /// Only this task's (id or key).
        #[arg(long)]
        task: Option<String>,
    },
    /// Release a reservation you made.
    Release {
        /// The reservation's id.
        id: i64,
        /// Task id or key (default: $TASKYARD_TASK_ID).
        #[arg(long, env = "TASKYARD_TASK_ID")]
        task: String,
        /// The fence from the claim (default: $TASKYARD_FENCE).
        #[arg(long, env = "TASKYARD_FENCE")]
        fence: i64,
    },
}

fn line(r: &Value) -> String {
    let paths: Vec<&str> = r["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "reservation #{:<5} task #{:<6} {:<20} {:<9} {}",
        r["id"],
        r["task_id"],
        r["holder"].as_str().unwrap_or(""),
        if r["exclusive"] == true {
            "exclusive"
        } else {
            "shared"
        },
        paths.join(" ")
    )
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Reserves paths under a lease.
pub async fn reserve(global: &ClientArgs, args: ReserveArgs) -> CliResult {
    let body = json!({"fence": args.fence, "paths": args.patterns, "exclusive": !args.shared});
    let path = format!("/tasks/{}/reservations", encode(&args.task));
    let made = global.client().post(&path, &body).await?.unwrap_or_default();
    if global.json {
        output::json(&made);
    } else {
        say!("reserved: {}", line(&made));
    }
    Ok(EXIT_OK)
}

/// Runs a reservations subcommand.
pub async fn run(global: &ClientArgs, cmd: ReservationsCommand) -> CliResult {
    let client = global.client();
    match cmd {
        ReservationsCommand::List { path, task } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(p) = &path {
                query.append_pair("path", p);
            }
            if let Some(t) = &task {
                query.append_pair("task", t);
            }
            let list = client.get(&format!("/reservations?{}", query.finish())).await?;
            if global.json {
                output::json(&list);
            } else {
                output::none_if_empty(&list, "reservations");
                for r in list["items"].as_array().into_iter().flatten() {
                    say!("{}", line(r));
                }
            }
        }
        ReservationsCommand::Release { id, task, fence } => {
            let path = format!("/tasks/{}/reservations/{id}?fence={fence}", encode(&task));
            let released: Value = client
                .call(Method::DELETE, &path, None::<&Value>)
                .await?
                .ok_or_else(|| ClientError::Decode("empty answer".into()))?;
            if global.json {
                output::json(&released);
            } else {
                say!("released: {}", line(&released));
            }
        }
    }
    Ok(EXIT_OK)
}
