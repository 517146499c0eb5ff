//! `taskyard task …`: create, inspect, claim and work on tasks. Inside a spawned run the task
//! id and fence come from `TASKYARD_TASK_ID` and `TASKYARD_FENCE`, so `taskyard task complete
//! --summary "…"` is enough.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::output::{self, say};
use super::{CliResult, ClientArgs, EXIT_NO_WORK, EXIT_OK};

/// Task subcommands.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Create a task.
    Add {
        /// One-line title.
        title: String,
        #[command(flatten)]
        fields: TaskFields,
        /// The task this one was split from.
        #[arg(long)]
        parent: Option<i64>,
        /// Unique key (makes the create idempotent).
        #[arg(long)]
        key: Option<String>,
    },
    /// List tasks, newest first.
    List {
        /// Status (comma-separated for several).
        #[arg(long)]
        status: Option<String>,
        /// Project.
        #[arg(long)]
        project: Option<String>,
        /// Priority (comma-separated for several).
        #[arg(long)]
        priority: Option<String>,
        /// Kind.
        #[arg(long)]
        kind: Option<String>,
        /// Required capability.
        #[arg(long)]
        capability: Option<String>,
        /// Route.
        #[arg(long)]
        route: Option<String>,
        /// Subtasks of this task.
        #[arg(long)]
        parent: Option<i64>,
        /// Text search.
        #[arg(long, short)]
        q: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Cursor from the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one task (id or key) with its events.
    Show {
        /// Task id or key.
        id: String,
    },
    /// Explain why a task is or is not claimable.
    Why {
        /// Task id or key.
        id: String,
    },
    /// What earlier attempts at a task left: holders, how they ended, notes, branches, logs.
    Handoff {
        /// Task id or key (default: $TASKYARD_TASK_ID).
        #[arg(env = "TASKYARD_TASK_ID")]
        id: String,
    },
    /// Claim a given task.
    Claim {
        /// Task id or key.
        id: String,
        /// Lease length in seconds.
        #[arg(long)]
        lease_seconds: Option<u64>,
    },
    /// Claim the best ready task; exits 3 when there is none.
    Next {
        /// Capabilities to match (repeatable; default: the agent's own).
        #[arg(long = "capability", short = 'c')]
        capabilities: Vec<String>,
        /// Only these projects (repeatable).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Wait up to this many seconds (max 60) for work.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Lease length in seconds.
        #[arg(long)]
        lease_seconds: Option<u64>,
    },
    /// Report progress (no --percent and no --note: a heartbeat).
    Progress {
        #[command(flatten)]
        lease: LeaseArgs,
        /// 0..100.
        #[arg(long)]
        percent: Option<i64>,
        /// What is happening.
        #[arg(long, short)]
        note: Option<String>,
    },
    /// Complete the task you hold.
    Complete {
        #[command(flatten)]
        lease: LeaseArgs,
        /// What was done.
        #[arg(long, short)]
        summary: String,
        /// A deliverable as KIND:REF[:NOTE], e.g. commit:abc123 (repeatable).
        #[arg(long = "deliverable")]
        deliverables: Vec<String>,
        /// Minutes spent.
        #[arg(long)]
        minutes: Option<i64>,
    },
    /// Fail the attempt (retryable unless --final).
    Fail {
        #[command(flatten)]
        lease: LeaseArgs,
        /// Why.
        #[arg(long, short)]
        reason: String,
        /// No retry: the task fails for good.
        #[arg(long = "final")]
        is_final: bool,
    },
    /// Hand the task back.
    Release {
        #[command(flatten)]
        lease: LeaseArgs,
        /// Why.
        #[arg(long, short)]
        note: Option<String>,
    },
    /// Block the task on a decision a person must make.
    Block {
        #[command(flatten)]
        lease: LeaseArgs,
        /// The decision needed.
        #[arg(long, short)]
        reason: String,
    },
    /// Lift a block (people and admins).
    Unblock {
        /// Task id or key.
        id: String,
        /// Why.
        #[arg(long, short)]
        note: Option<String>,
    },
    /// Edit a task that is not in progress (admin); an edited task is routed afresh. A list
    /// option replaces the whole list.
    Edit {
        /// Task id or key.
        id: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        #[command(flatten)]
        fields: TaskFields,
    },
    /// Route a task afresh (admin): after agent types were added, work that went to people can
    /// go to agents.
    Reroute {
        /// Task id or key.
        id: String,
    },
    /// Cancel a task and its unfinished subtasks.
    Cancel {
        /// Task id or key.
        id: String,
        /// Why.
        #[arg(long, short)]
        note: Option<String>,
    },
}

/// The fields `task add` and `task edit` set.
#[derive(Debug, clap::Args)]
pub struct TaskFields {
    /// Markdown description.
    #[arg(long, short)]
    description: Option<String>,
    /// P0..P3 (or high, critical, …).
    #[arg(long, short)]
    priority: Option<String>,
    /// implementation, bug, test, docs, research, architecture, strategic, …
    #[arg(long, short)]
    kind: Option<String>,
    /// Required capability (repeatable).
    #[arg(long = "capability", short = 'c')]
    capabilities: Vec<String>,
    /// Acceptance criterion (repeatable).
    #[arg(long = "criterion")]
    criteria: Vec<String>,
    /// Id or key of a task that must complete first (repeatable).
    #[arg(long = "depends-on")]
    depends_on: Vec<String>,
    /// auto, agent (pull only, never spawned), human or spawn.
    #[arg(long)]
    route: Option<String>,
    /// Project.
    #[arg(long)]
    project: Option<String>,
    /// Claims allowed.
    #[arg(long)]
    max_attempts: Option<i64>,
    /// A path pattern it expects to touch, e.g. 'src/auth/**' (repeatable): a claim reserves it.
    #[arg(long = "path")]
    paths: Vec<String>,
}

impl TaskFields {
    /// The request body members for the fields given.
    fn body(self) -> Map<String, Value> {
        let mut body = Map::new();
        put(&mut body, "description", self.description.map(Value::from));
        put(&mut body, "priority", self.priority.map(Value::from));
        put(&mut body, "kind", self.kind.map(Value::from));
        let list = |items: Vec<Value>| (!items.is_empty()).then_some(Value::Array(items));
        put(
            &mut body,
            "capabilities",
            list(self.capabilities.into_iter().map(Value::from).collect()),
        );
        put(
            &mut body,
            "acceptance_criteria",
            list(self.criteria.into_iter().map(Value::from).collect()),
        );
        put(&mut body, "depends_on", list(task_refs(&self.depends_on)));
        put(&mut body, "route", self.route.map(Value::from));
        put(&mut body, "project", self.project.map(Value::from));
        put(&mut body, "max_attempts", self.max_attempts.map(Value::from));
        put(
            &mut body,
            "paths",
            list(self.paths.into_iter().map(Value::from).collect()),
        );
        body
    }
}

/// Which lease a call acts under.
#[derive(Debug, clap::Args)]
pub struct LeaseArgs {
    /// Task id or key (default: $TASKYARD_TASK_ID).
    #[arg(env = "TASKYARD_TASK_ID")]
    id: String,
    /// The fence from the claim (default: $TASKYARD_FENCE).
    #[arg(long, env = "TASKYARD_FENCE")]
    fence: Option<i64>,
}

/// Inserts `value` under `key` when present.
fn put(body: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        body.insert(key.to_string(), v);
    }
}

fn deliverable(text: &str) -> Value {
    let mut parts = text.splitn(3, ':');
    let kind = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (Some(reference), note) => json!({"kind": kind, "ref": reference, "note": note}),
        (None, _) => json!({"kind": "note", "ref": kind}),
    }
}

fn print_task(global: &ClientArgs, task: &Value) {
    if global.json {
        output::json(task);
    } else {
        say!("{}", output::task_line(task));
    }
}

fn print_claim(global: &ClientArgs, claim: &Value) {
    if global.json {
        output::json(claim);
    } else {
        say!("{}", output::task_line(&claim["task"]));
        say!(
            "fence={} expires_at={}",
            claim["lease"]["fence"],
            claim["lease"]["expires_at"].as_str().unwrap_or("")
        );
    }
}

/// Runs a task subcommand.
pub async fn run(global: &ClientArgs, cmd: TaskCommand) -> CliResult {
    let client = global.client();
    match cmd {
        TaskCommand::Add {
            title,
            fields,
            parent,
            key,
        } => {
            let mut body = fields.body();
            body.insert("title".into(), json!(title));
            put(&mut body, "parent_id", parent.map(Value::from));
            put(&mut body, "key", key.map(Value::from));
            let task = client
                .post("/tasks", &Value::Object(body))
                .await?
                .unwrap_or_default();
            print_task(global, &task);
        }
        TaskCommand::List {
            status,
            project,
            priority,
            kind,
            capability,
            route,
            parent,
            q,
            limit,
            cursor,
        } => {
            let mut query = url_query(&[
                ("status", status),
                ("project", project),
                ("priority", priority),
                ("kind", kind),
                ("capability", capability),
                ("route", route),
                ("parent_id", parent.map(|p| p.to_string())),
                ("q", q),
                ("cursor", cursor),
            ]);
            query.push_str(&format!(
                "{}limit={limit}",
                if query.is_empty() { "?" } else { "&" }
            ));
            let page = client.get(&format!("/tasks{query}")).await?;
            if global.json {
                output::json(&page);
            } else {
                output::none_if_empty(&page, "tasks");
                for task in page["items"].as_array().into_iter().flatten() {
                    say!("{}", output::task_line(task));
                }
                if let Some(next) = page["next_cursor"].as_str() {
                    say!("(more: --cursor {next})");
                }
            }
        }
        TaskCommand::Show { id } => {
            let task = client.get(&format!("/tasks/{id}")).await?;
            if global.json {
                output::json(&task);
            } else {
                output::task_detail(&task);
            }
        }
        TaskCommand::Handoff { id } => {
            let handoff = client.get(&format!("/tasks/{id}/handoff")).await?;
            if global.json {
                output::json(&handoff);
            } else {
                output::handoff(&handoff);
            }
        }
        TaskCommand::Why { id } => {
            let why = client.get(&format!("/tasks/{id}/why")).await?;
            if global.json {
                output::json(&why);
            } else {
                say!(
                    "#{} {} — {}",
                    why["task_id"],
                    why["status"].as_str().unwrap_or(""),
                    if why["claimable"] == json!(true) {
                        "claimable now"
                    } else {
                        "not claimable now"
                    }
                );
                for reason in why["reasons"].as_array().into_iter().flatten() {
                    say!("  - {}", reason.as_str().unwrap_or(""));
                }
                let decisions = why["decisions"].as_array().filter(|d| !d.is_empty());
                if let Some(decisions) = decisions {
                    say!("decisions:");
                    for d in decisions {
                        say!(
                            "  {}  {}",
                            d["at"].as_str().unwrap_or(""),
                            d["text"].as_str().unwrap_or("")
                        );
                    }
                }
            }
        }
        TaskCommand::Claim { id, lease_seconds } => {
            let body = json!({"lease_seconds": lease_seconds});
            let claim = client
                .post(&format!("/tasks/{id}/claim"), &strip_nulls(body))
                .await?
                .unwrap_or_default();
            print_claim(global, &claim);
        }
        TaskCommand::Next {
            capabilities,
            projects,
            wait,
            lease_seconds,
        } => {
            let mut body = Map::new();
            put(
                &mut body,
                "capabilities",
                (!capabilities.is_empty()).then(|| json!(capabilities)),
            );
            put(
                &mut body,
                "projects",
                (!projects.is_empty()).then(|| json!(projects)),
            );
            put(&mut body, "wait_seconds", (wait > 0).then(|| json!(wait)));
            put(&mut body, "lease_seconds", lease_seconds.map(Value::from));
            match client.post("/claims/next", &Value::Object(body)).await? {
                Some(claim) => print_claim(global, &claim),
                None => {
                    if global.json {
                        say!("null");
                    } else {
                        eprintln!("no work available");
                    }
                    return Ok(EXIT_NO_WORK);
                }
            }
        }
        TaskCommand::Progress { lease, percent, note } => {
            let mut body = Map::new();
            put(&mut body, "percent", percent.map(Value::from));
            put(&mut body, "note", note.map(Value::from));
            return under_lease(&client, global, &lease, "progress", body).await;
        }
        TaskCommand::Complete {
            lease,
            summary,
            deliverables,
            minutes,
        } => {
            let mut body = Map::new();
            body.insert("summary".into(), json!(summary));
            let list: Vec<Value> = deliverables.iter().map(|d| strip_nulls(deliverable(d))).collect();
            put(&mut body, "deliverables", (!list.is_empty()).then(|| json!(list)));
            put(&mut body, "time_spent_minutes", minutes.map(Value::from));
            return under_lease(&client, global, &lease, "complete", body).await;
        }
        TaskCommand::Fail {
            lease,
            reason,
            is_final,
        } => {
            let mut body = Map::new();
            body.insert("reason".into(), json!(reason));
            body.insert("retryable".into(), json!(!is_final));
            return under_lease(&client, global, &lease, "fail", body).await;
        }
        TaskCommand::Release { lease, note } => {
            let mut body = Map::new();
            put(&mut body, "note", note.map(Value::from));
            return under_lease(&client, global, &lease, "release", body).await;
        }
        TaskCommand::Block { lease, reason } => {
            let mut body = Map::new();
            body.insert("reason".into(), json!(reason));
            return under_lease(&client, global, &lease, "block", body).await;
        }
        TaskCommand::Unblock { id, note } => {
            let task = client
                .post(
                    &format!("/tasks/{id}/unblock"),
                    &strip_nulls(json!({"note": note})),
                )
                .await?
                .unwrap_or_default();
            print_task(global, &task);
        }
        TaskCommand::Edit { id, title, fields } => {
            let mut body = fields.body();
            put(&mut body, "title", title.map(Value::from));
            let task = client
                .call(
                    reqwest::Method::PATCH,
                    &format!("/tasks/{id}"),
                    Some(&Value::Object(body)),
                )
                .await?
                .unwrap_or_default();
            print_task(global, &task);
        }
        TaskCommand::Reroute { id } => {
            let task = client
                .post(&format!("/tasks/{id}/reroute"), &json!({}))
                .await?
                .unwrap_or_default();
            print_task(global, &task);
        }
        TaskCommand::Cancel { id, note } => {
            let task = client
                .post(
                    &format!("/tasks/{id}/cancel"),
                    &strip_nulls(json!({"note": note})),
                )
                .await?
                .unwrap_or_default();
            print_task(global, &task);
        }
    }
    Ok(EXIT_OK)
}

/// Calls `POST /tasks/{id}/{action}` under the lease and prints the task.
async fn under_lease(
    client: &crate::client::Client,
    global: &ClientArgs,
    lease: &LeaseArgs,
    action: &str,
    mut body: Map<String, Value>,
) -> CliResult {
    put(&mut body, "fence", lease.fence.map(Value::from));
    let path = format!("/tasks/{}/{action}", lease.id);
    let task = client
        .post(&path, &Value::Object(body))
        .await?
        .unwrap_or_default();
    print_task(global, &task);
    Ok(EXIT_OK)
}

/// Ids as numbers, keys as strings.
fn task_refs(refs: &[String]) -> Vec<Value> {
    refs.iter()
        .map(|d| d.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(d)))
        .collect()
}

/// Drops null members of an object, so optional flags left out are not sent.
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

/// `?a=1&b=2` from the pairs that have a value, percent-encoded.
fn url_query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in pairs {
        if let Some(v) = value {
            out.append_pair(key, v);
            any = true;
        }
    }
    if any {
        format!("?{}", out.finish())
    } else {
        String::new()
    }
}
