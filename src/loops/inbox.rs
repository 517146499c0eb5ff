//! `inbox`: a folder where any program drops `*.json` task requests (the body of
//! `POST /tasks`). Each file is ingested once (its `key`, or `inbox-<file name>-<content hash>`
//! when it has none, makes it idempotent), answered with `<name>.response.json`, and moved to `processed/`
//! or `failed/`. Files not ending in `.json` are ignored, so writers write under another name and
//! rename; an unparsable file younger than `settle` is left for the next run in case it is
//! still being written.
//!
//! Others may write into the folder, so nothing in it is trusted: only regular files are read
//! (opened without following links, and checked again on the open handle); links, pipes and
//! folders named `*.json` are answered with an error and moved aside themselves, never what they
//! point to; answers are written under a fresh random name and renamed into place, which
//! replaces whatever sat under the answer's name instead of writing through it; and `processed/`
//! and `failed/` must be real folders.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
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

/// Writes `value` to `path` atomically: into a new file under a random hidden name (created
/// exclusively, so nothing placed there beforehand is written through), then renamed over
/// `path`, which replaces a link found there rather than following it. A failed write (a full
/// disk, say) leaves no temporary file behind.
fn write_atomically(dir: &Path, path: &Path, value: &Value) -> std::io::Result<()> {
    let stem = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(crate::files::temporary_name(&stem));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| file.write_all(&serde_json::to_vec_pretty(value).unwrap_or_default()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Checks that `folder` (`processed/` or `failed/`) is a real folder, or absent.
fn check_folder(folder: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(folder) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!(
            "{} is not a folder (a link or a file); the inbox moves no request through it: \
             remove it",
            folder.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot look at {}", folder.display())),
    }
}

/// Moves `file` (the entry itself, even a link) into `folder`, never over an earlier entry of
/// the same name.
fn move_into(file: &Path, folder: &Path) -> anyhow::Result<()> {
    check_folder(folder)?;
    std::fs::create_dir_all(folder)?;
    let name = file.file_name().unwrap_or_default();
    let mut target = folder.join(name);
    if std::fs::symlink_metadata(&target).is_ok() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
        target = folder.join(format!("{}.{stamp}", name.to_string_lossy()));
    }
    Ok(std::fs::rename(file, target)?)
}

/// What an inbox entry holds.
enum Request {
    /// A regular file's content and when it last changed.
    Read { bytes: Vec<u8>, modified: SystemTime },
    /// A regular file larger than allowed.
    TooLarge,
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
}

fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a pipe"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

/// Reads the entry at `path` if it is a regular file of at most `limit` bytes. It is opened
/// without following links (and without waiting, should a pipe take its place meanwhile), and
/// its type and size are judged again on the open handle.
fn read_request(path: &Path, limit: u64) -> std::io::Result<Request> {
    let kind = std::fs::symlink_metadata(path)?.file_type();
    if !kind.is_file() {
        return Ok(Request::NotRegular(describe(kind)));
    }
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        // Replaced by a link since it was looked at.
        Err(err) if err.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Ok(Request::NotRegular("a symbolic link"))
        }
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Request::NotRegular(describe(meta.file_type())));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if meta.len() > limit || bytes.len() as u64 > limit {
        return Ok(Request::TooLarge);
    }
    Ok(Request::Read {
        bytes,
        modified: meta.modified()?,
    })
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
        let limit = ctx.config.server.max_body_bytes as u64;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let answer = match read_request(file, limit)? {
            Request::NotRegular(what) => problem(ApiError::BadRequest(format!(
                "{name} is not a regular file but {what}; the inbox reads only regular files"
            ))),
            Request::TooLarge => problem(ApiError::PayloadTooLarge(format!(
                "the file is larger than {limit} bytes"
            ))),
            Request::Read { bytes, modified } => match parse_json::<CreateTask>(&bytes) {
                Err(JsonError::Syntax(m)) => {
                    let age = SystemTime::now().duration_since(modified).unwrap_or_default();
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
                            // The database failing leaves the file for the next run.
                            Err(e) if !e.is_refusal() => return Err(e.into()),
                            Err(other) => problem(ApiError::from(other)),
                        },
                    }
                }
            },
        };
        let ok = answer["ok"] == json!(true);
        write_atomically(dir, &response, &answer)
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
            check_folder(&dir.join("processed"))?;
            check_folder(&dir.join("failed"))?;
            // Every entry named like a request, whatever it is: what is not a regular file is
            // answered too, so whoever dropped it learns why nothing happened.
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.path())
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
