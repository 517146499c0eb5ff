//! `retention-backup`: prunes events, spawned runs' logs and folders (their prompts) past their
//! age, removes the git worktrees of runs that are over (a run removes its own as it ends; these
//! are leftovers), then writes an online
//! backup of the database to `<data-dir>/backups/` (with `VACUUM INTO`), keeping the newest N.
//! A backup is a complete database: `taskyard serve --data-dir` on a folder holding it as
//! `taskyard.db` opens it. With several nodes it runs on each (its own data folder); events are
//! pruned by the leader only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::domain::Timestamp;

use super::{settings, Loop, LoopContext, Outcome, Span};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBackup {
    /// Events older than this are deleted.
    #[serde(default = "thirty_days")]
    events_max_age: Span,
    /// Run logs (`<data-dir>/runs/*.log`) and run folders (`runs/<id>/`) older than this are
    /// deleted.
    #[serde(default = "fourteen_days")]
    run_logs_max_age: Span,
    /// Backups kept; 0 turns backups off.
    #[serde(default = "seven")]
    backups_keep: usize,
}

fn thirty_days() -> Span {
    Span(Duration::from_secs(30 * 86_400))
}
fn fourteen_days() -> Span {
    Span(Duration::from_secs(14 * 86_400))
}
fn seven() -> usize {
    7
}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    Ok(Arc::new(settings::<RetentionBackup>(table)?))
}

/// Deletes files in `dir` ending in `suffix` last modified before `cutoff`; returns how many.
fn prune_files(dir: &Path, suffix: &str, cutoff: SystemTime) -> std::io::Result<usize> {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry.metadata()?.modified()? < cutoff;
        if old && path.to_string_lossy().ends_with(suffix) {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Deletes the run folders (`runs/<id>/`, holding a run's prompt) in `dir` last modified before
/// `cutoff`; returns how many.
fn prune_run_folders(dir: &Path, cutoff: SystemTime) -> std::io::Result<usize> {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for entry in entries.flatten() {
        // The entry's own type: a link is never followed into.
        if entry.file_type()?.is_dir() && entry.metadata()?.modified()? < cutoff {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Writes a new backup and deletes all but the newest `keep`; returns the new file.
async fn backup(ctx: &LoopContext, keep: usize) -> anyhow::Result<(PathBuf, usize)> {
    let dir = ctx.data_dir.join("backups");
    crate::files::private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let target = dir.join(format!("taskyard-{stamp}.db"));
    let partial = dir.join(format!(".taskyard-{stamp}.db.partial"));
    // Written under a temporary name first, so a crash never leaves a half backup that looks
    // whole. A half backup takes space, which may be what made it fail (a full disk): it is
    // deleted at once, and any a crash left behind before the next backup starts.
    prune_files(&dir, ".db.partial", SystemTime::now())?;
    // Created empty and private first: SQLite would create it readable by everyone (a backup
    // holds every token hash and task), and it writes into an empty file it is given.
    let written = match crate::files::create_private_file(&partial) {
        Ok(file) => {
            drop(file);
            ctx.store.backup_into(&partial).await.map_err(anyhow::Error::new)
        }
        Err(err) => Err(anyhow::Error::new(err)),
    };
    if let Err(err) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(err.context(format!("cannot write a backup into {}", dir.display())));
    }
    std::fs::rename(&partial, &target)?;
    let mut backups: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with("taskyard-") && name.ends_with(".db")
        })
        .collect();
    backups.sort();
    let surplus = backups.len().saturating_sub(keep);
    for old in &backups[..surplus] {
        std::fs::remove_file(old)?;
    }
    Ok((target, surplus))
}

impl Loop for RetentionBackup {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let now = Timestamp::now();
            // Runs on every node: each prunes its own data folder, the leader the shared log.
            let events = match ctx.cluster.leads() {
                true => {
                    ctx.store
                        .prune_events(now.plus_millis(-(self.events_max_age.0.as_millis() as i64)))
                        .await?
                }
                false => 0,
            };
            let runs = ctx.data_dir.join("runs");
            let cutoff = SystemTime::now() - self.run_logs_max_age.0;
            let logs = prune_files(&runs, ".log", cutoff)?;
            let folders = prune_run_folders(&runs, cutoff)?;
            let worktrees = ctx.spawner.sweep_worktrees().await?;
            let files = ctx.store.backs_up_to_files();
            let (backup, dropped) = if self.backups_keep > 0 && files {
                let (path, dropped) = backup(ctx, self.backups_keep).await?;
                (Some(path), dropped)
            } else {
                (None, 0)
            };
            let summary = match &backup {
                Some(path) => format!(
                    "pruned {events} events and {logs} run logs; backup {} ({dropped} old backups removed)",
                    path.display()
                ),
                None if !files => format!(
                    "pruned {events} events and {logs} run logs; the PostgreSQL registry is backed up with pg_dump"
                ),
                None => format!("pruned {events} events and {logs} run logs; backups are off"),
            };
            Ok(Outcome::new(
                summary,
                json!({"events_pruned": events, "run_logs_pruned": logs, "run_folders_pruned": folders,
                       "worktrees_removed": worktrees,
                       "backup": backup,
                       "backups_removed": dropped}),
            ))
        })
    }
}
