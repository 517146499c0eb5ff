//! `inbox`: a folder where any program drops `*.json` task requests (the body of
//! `POST /tasks`). Each file is ingested once (its `key`, or `inbox-<file name>-<content hash>`
//! when it has none, makes it idempotent), answered with `<name>.response.json`, and moved to `processed/`
//! or `failed/`. Files not ending in `.json` are ignored, so writers write under another name and
//! rename; an unparsable file younger than `settle` is left for the next run in case it is
//! still being written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

use crate::domain::input::{parse_json, CreateTask, JsonError};
use crate::domain::{Principal, Role};
use crate::error::ApiError;
use crate::store::StoreError;

use super::{settings, Loop, LoopContext, Outcome, Span};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inbox {
    /// The folder; default `<data-dir>/inbox`.
    dir: Option<PathBuf>,
    /// How long an unparsable file may still be in the middle of being written.
    #[serde(default = "two_seconds")]
    settle: Span,
}

fn two_seconds() -> Span {
    Span(Duration::from_secs(2))
}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<Inbox>(table)?))
}

/// What happened to one file.
enum Fate {
    Ingested,
    Failed,
    Waiting,
}

/// Writes `value` to `path` atomically (temporary file, then rename); a failed write (a full
/// disk, say) leaves no temporary file behind.
fn write_atomically(path: &Path, value: &Value) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let written = std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap_or_default())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Moves `file` into `folder`, never overwriting an earlier file of the same name.
fn move_into(file: &Path, folder: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    let name = file.file_name().unwrap_or_default();
    let mut target = folder.join(name);
    if target.exists() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
        target = folder.join(format!("{}.{stamp}", name.to_string_lossy()));
    }
    std::fs::rename(file, target)
}

fn problem(err: ApiError) -> Value {
    let p = err.problem();
    json!({"ok": false, "error": {"code": p.code, "detail": p.detail, "field": p.field}})
}

impl Inbox {
    fn dir(&self, ctx: &LoopContext) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| ctx.data_dir.join("inbox"))
    }

    async fn ingest(&self, ctx: &LoopContext, dir: &Path, file: &Path) -> anyhow::Result<Fate> {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let response = dir.join(format!("{stem}.response.json"));
        let meta = std::fs::metadata(file)?;
        let limit = ctx.config.server.max_body_bytes as u64;
        let answer = if meta.len() > limit {
            problem(ApiError::PayloadTooLarge(format!(
                "the file is larger than {limit} bytes"
            )))
        } else {
            let bytes = std::fs::read(file)?;
            match parse_json::<CreateTask>(&bytes) {
                Err(JsonError::Syntax(m)) => {
                    let age = SystemTime::now()
                        .duration_since(meta.modified()?)
                        .unwrap_or_default();
                    if age < self.settle.0 {
                        return Ok(Fate::Waiting);
                    }
                    problem(ApiError::BadRequest(m))
                }
                Err(JsonError::Field(e)) => problem(ApiError::Invalid(e)),
                Ok(mut body) => {
                    if body.key.is_none() {
                        // Named by file and content: the same request dropped twice is one task,
                        // a different request under a reused file name is another.
                        let digest = hex::encode(&sha2::Sha256::digest(&bytes)[..6]);
                        body.key = Some(format!("inbox-{stem}-{digest}"));
                    }
                    match body.parse() {
                        Err(e) => problem(ApiError::Invalid(e)),
                        Ok(spec) => match ctx.store.create_task(spec, &inbox_principal()).await {
                            Ok((task, created)) => json!({"ok": true, "created": created, "task": task}),
                            Err(StoreError::Db(e)) => return Err(e.into()),
                            Err(other) => problem(ApiError::from(other)),
                        },
                    }
                }
            }
        };
        let ok = answer["ok"] == json!(true);
        write_atomically(&response, &answer)
            .with_context(|| format!("cannot write {}", response.display()))?;
        move_into(file, &dir.join(if ok { "processed" } else { "failed" }))?;
        Ok(if ok { Fate::Ingested } else { Fate::Failed })
    }
}

fn inbox_principal() -> Principal {
    Principal {
        agent_id: None,
        name: "loop:inbox".into(),
        role: Role::Agent,
        kind: "inbox".into(),
        capabilities: Vec::new(),
        scope: None,
    }
}

impl Loop for Inbox {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let dir = self.dir(ctx);
            // Created private when missing; a folder named in the settings keeps its mode.
            crate::files::create_dir_private(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    name.ends_with(".json") && !name.ends_with(".response.json") && !name.starts_with('.')
                })
                .collect();
            files.sort();
            let (mut ingested, mut failed, mut waiting) = (0, 0, 0);
            let mut errors = Vec::new();
            for file in &files {
                match self.ingest(ctx, &dir, file).await {
                    Ok(Fate::Ingested) => ingested += 1,
                    Ok(Fate::Failed) => failed += 1,
                    Ok(Fate::Waiting) => waiting += 1,
                    // One unreadable file must not hold up the others; it is tried again next run.
                    Err(err) => errors.push(format!("{}: {err:#}", file.display())),
                }
            }
            if !errors.is_empty() {
                anyhow::bail!(
                    "{ingested} files ingested, {failed} failed; could not process {}",
                    errors.join("; ")
                );
            }
            Ok(Outcome::new(
                format!("{ingested} files ingested, {failed} failed, {waiting} still being written"),
                json!({"ingested": ingested, "failed": failed, "waiting": waiting}),
            ))
        })
    }
}
