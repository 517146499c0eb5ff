//! `command`: runs a configured program (argv, never a shell string) with a timeout, and
//! upserts the tasks it prints on stdout as JSON lines (`key` required; same body as
//! `POST /tasks`). The program starts with a clean environment (see `spawn/environment.rs`)
//! plus `TASKYARD_URL` and a `TASKYARD_TOKEN` minted for this run; its exit code and the tail of
//! its stderr are recorded with the run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::check_passthrough;
use crate::domain::input::{parse_json, CreateTask, TaskPatch, TaskSpec};
use crate::domain::{Principal, Role, Status, Task};
use crate::spawn::environment::program_env;
use crate::token::{hash_token, new_token};

use super::{settings, Loop, LoopContext, Outcome, Span};

/// Most stdout read from one run.
const MAX_STDOUT: usize = 4 * 1024 * 1024;
/// How much of the end of stderr is kept.
const STDERR_TAIL: usize = 4 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandLoop {
    #[serde(skip)]
    name: String,
    /// Program and arguments.
    command: Vec<String>,
    /// Longest run.
    #[serde(default = "one_minute")]
    timeout: Span,
    /// Extra environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Variables of the server's environment passed on as they are.
    #[serde(default)]
    env_passthrough: Vec<String>,
    /// Working directory.
    workdir: Option<PathBuf>,
}

fn one_minute() -> Span {
    Span(Duration::from_secs(60))
}

/// Builds the loop.
pub fn build(name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    let mut c: CommandLoop = settings(table)?;
    if c.command.is_empty() || c.command[0].trim().is_empty() {
        return Err("command must name a program: command = [\"program\", \"arg\", …]".into());
    }
    for (i, var) in c.env_passthrough.iter().enumerate() {
        check_passthrough(var).map_err(|m| format!("env_passthrough[{i}]: {m}"))?;
    }
    c.name = name.to_string();
    Ok(Arc::new(c))
}

async fn read_capped(mut from: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if out.len() < cap {
            out.extend_from_slice(&buf[..n.min(cap - out.len())]);
        }
    }
    out
}

async fn read_tail(mut from: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > 2 * keep {
            out.drain(..out.len() - keep);
        }
    }
    if out.len() > keep {
        out.drain(..out.len() - keep);
    }
    out
}

/// What a pipe reader collected, waiting a little for the pipe to close.
async fn drain(reader: tokio::task::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let abort = reader.abort_handle();
    match tokio::time::timeout(Duration::from_secs(2), reader).await {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(_) => {
            abort.abort();
            Vec::new()
        }
    }
}

/// The fields of `spec` that differ from `task`, as an edit (empty when nothing differs).
fn changes(task: &Task, spec: TaskSpec) -> TaskPatch {
    fn differs<T: PartialEq>(old: &T, new: T) -> Option<T> {
        (*old != new).then_some(new)
    }
    TaskPatch {
        project: differs(&task.project, spec.project),
        title: differs(&task.title, spec.title),
        description: differs(&task.description, spec.description),
        priority: differs(&task.priority, spec.priority),
        kind: differs(&task.kind, spec.kind),
        capabilities: differs(&task.capabilities, spec.capabilities),
        acceptance_criteria: differs(&task.acceptance_criteria, spec.acceptance_criteria),
        depends_on: None,
        route: differs(&task.route, spec.route),
        max_attempts: differs(&task.max_attempts, spec.max_attempts),
        paths: differs(&task.paths, spec.paths),
    }
}

#[derive(Default)]
struct Tally {
    created: usize,
    updated: usize,
    unchanged: usize,
    invalid: Vec<String>,
}

impl CommandLoop {
    /// Creates or updates the task one printed line describes.
    async fn upsert(
        &self,
        ctx: &LoopContext,
        who: &Principal,
        line_no: usize,
        line: &str,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let spec = match parse_json::<CreateTask>(line.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|body| {
                if body.key.is_none() {
                    return Err("key: required, so that the task is created only once".to_string());
                }
                body.parse().map_err(|e| e.to_string())
            }) {
            Ok(spec) => spec,
            Err(e) => {
                tally.invalid.push(format!("line {line_no}: {e}"));
                return Ok(());
            }
        };
        let (task, created) = match ctx.store.create_task(spec.clone(), who).await {
            Ok(done) => done,
            // The database failing fails the run; a refused line is the program's mistake.
            Err(e) if !e.is_refusal() => return Err(e.into()),
            Err(e) => {
                tally.invalid.push(format!("line {line_no}: {e}"));
                return Ok(());
            }
        };
        if created {
            tally.created += 1;
            return Ok(());
        }
        let patch = changes(&task, spec);
        if patch == TaskPatch::default() || task.status == Status::InProgress || task.status.is_final() {
            tally.unchanged += 1;
            return Ok(());
        }
        match ctx.store.patch_task(task.id, patch, who).await {
            Ok(_) => tally.updated += 1,
            Err(e) if !e.is_refusal() => return Err(e.into()),
            // Claimed between the two steps, say: the task keeps its current fields.
            Err(e) => tally.invalid.push(format!("line {line_no}: {e}")),
        }
        Ok(())
    }
}

impl Loop for CommandLoop {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let token = new_token();
            let who = ctx
                .store
                .rotate_agent_token(
                    &format!("loop-{}", self.name),
                    "loop",
                    Role::Agent,
                    &hex::encode(hash_token(&token)),
                    None,
                )
                .await?;
            let mut cmd = tokio::process::Command::new(&self.command[0]);
            cmd.args(&self.command[1..])
                .env_clear()
                .envs(program_env(&self.env_passthrough, &self.env))
                .env("TASKYARD_URL", &ctx.url)
                .env("TASKYARD_TOKEN", &token)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            if let Some(dir) = &self.workdir {
                cmd.current_dir(dir);
            }
            let mut child = cmd
                .spawn()
                .with_context(|| format!("cannot start {:?}", self.command[0]))?;
            let group = child.id().map(|id| Pid::from_raw(id as i32));
            let stdout = tokio::spawn(read_capped(child.stdout.take().context("no stdout")?, MAX_STDOUT));
            let stderr = tokio::spawn(read_tail(child.stderr.take().context("no stderr")?, STDERR_TAIL));
            let status = match tokio::time::timeout(self.timeout.0, child.wait()).await {
                Ok(status) => Some(status?),
                Err(_) => {
                    // The whole process group goes, grandchildren included. (Only here: once the
                    // leader is reaped and its group is empty, the id may belong to someone else.)
                    if let Some(group) = group {
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                    child.wait().await?;
                    None
                }
            };
            // A descendant that outlived the program may hold the pipes open: read what is there.
            let out = drain(stdout).await;
            let err_tail = String::from_utf8_lossy(&drain(stderr).await).into_owned();

            let mut tally = Tally::default();
            for (i, line) in String::from_utf8_lossy(&out).lines().enumerate() {
                if !line.trim().is_empty() {
                    self.upsert(ctx, &who, i + 1, line, &mut tally).await?;
                }
            }
            let exit_code = status.and_then(|s| s.code());
            let summary = format!(
                "{} created, {} updated, {} unchanged, {} invalid lines; {}",
                tally.created,
                tally.updated,
                tally.unchanged,
                tally.invalid.len(),
                match (status, exit_code) {
                    (None, _) => format!("killed after the {}s timeout", self.timeout.0.as_secs()),
                    (Some(_), Some(code)) => format!("exit code {code}"),
                    (Some(_), None) => "killed by a signal".into(),
                }
            );
            if exit_code != Some(0) {
                anyhow::bail!("{summary}; stderr: {}", err_tail.trim());
            }
            Ok(Outcome::new(
                summary,
                json!({"created": tally.created, "updated": tally.updated, "unchanged": tally.unchanged,
                       "invalid": tally.invalid, "exit_code": exit_code, "stderr_tail": err_tail}),
            ))
        })
    }
}
