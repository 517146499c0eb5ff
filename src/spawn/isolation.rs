//! Runs in git worktrees of their own, as the spawner keeps them. A run of an agent type with
//! `isolation = "worktree"` works in `<data-dir>/worktrees/run-<id>`, on a branch made for it
//! from the type's base. When the run ends, however it ends, its branch is read (its head and
//! its commits beyond the base) and then its folder is removed; the branch stays in the
//! repository. Folders of runs that are over are swept at boot and by the retention loop, and
//! every configured repository's records of them pruned. The git commands are `worktree.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::config::{AgentTypeConfig, Isolation};
use crate::domain::{BranchTip, Refused, Run, RunWorktree};
use crate::store::StoreError;

use super::worktree;
use super::Spawner;

/// Where a run is to work, before its worktree exists.
pub(super) struct Planned {
    /// The repository.
    pub repo: PathBuf,
    /// The worktree's folder.
    pub path: PathBuf,
    /// The branch to make.
    pub branch: String,
}

impl Spawner {
    /// The folder holding runs' worktrees.
    pub fn worktrees_dir(&self) -> PathBuf {
        worktree::absolute(&self.data_dir.join("worktrees"))
    }

    /// Where run `run_id` of an agent type configured as `cfg` works, on branch `branch`;
    /// None for a type whose runs share a folder.
    pub(super) fn plan_worktree(
        &self,
        run_id: i64,
        cfg: &AgentTypeConfig,
        branch: String,
    ) -> Option<Planned> {
        if cfg.isolation != Isolation::Worktree {
            return None;
        }
        Some(Planned {
            repo: worktree::absolute(cfg.repo.as_deref()?),
            path: self.worktrees_dir().join(format!("run-{run_id}")),
            branch,
        })
    }

    /// Makes the planned worktree from `base` (the repository's HEAD when None). The message
    /// of a failure carries git's.
    pub(super) async fn make_worktree(
        &self,
        plan: &Planned,
        base: Option<&str>,
    ) -> Result<RunWorktree, String> {
        let failed =
            |e: worktree::GitError| format!("cannot make a git worktree from {}: {e}", plan.repo.display());
        let base = worktree::resolve_base(&plan.repo, base).await.map_err(failed)?;
        crate::files::private_dir(&self.worktrees_dir())
            .map_err(|e| format!("cannot create the worktrees' folder: {e}"))?;
        if plan.path.exists() {
            // Left by a run of the same id in an earlier database: nothing of this one's.
            worktree::remove(&plan.repo, &plan.path).await.map_err(failed)?;
        }
        worktree::add(&plan.repo, &plan.path, &plan.branch, &base)
            .await
            .map_err(failed)?;
        Ok(RunWorktree {
            repo: plan.repo.to_string_lossy().into_owned(),
            path: plan.path.to_string_lossy().into_owned(),
            branch: plan.branch.clone(),
            base,
        })
    }

    /// Undoes [`Spawner::make_worktree`] for a run whose process never started: nothing was
    /// done on its branch, so the branch goes with the folder.
    pub(super) async fn discard_worktree(&self, made: &RunWorktree) {
        let repo = PathBuf::from(&made.repo);
        let removed = match worktree::remove(&repo, made.path.as_ref()).await {
            Ok(()) => worktree::delete_branch(&repo, &made.branch).await,
            Err(err) => Err(err),
        };
        if let Err(err) = removed {
            tracing::warn!(worktree = %made.path, branch = %made.branch, error = %err,
                "cannot undo the worktree of a run that did not start");
        }
    }

    /// Reads what a run's branch holds, then removes the run's worktree folder (the branch
    /// stays). None when the run had no worktree or its branch cannot be read (the repository
    /// is gone, say).
    pub(super) async fn close_worktree(&self, run: &Run) -> Option<BranchTip> {
        let (Some(repo), Some(branch), Some(base)) = (&run.repo, &run.branch, &run.base) else {
            return None;
        };
        let repo = PathBuf::from(repo);
        let tip = worktree::inspect(&repo, branch, base)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(run_id = run.id, %branch, error = %err, "cannot read a run's branch");
                None
            });
        if let Some(path) = &run.worktree {
            if let Err(err) = worktree::remove(&repo, path.as_ref()).await {
                tracing::warn!(run_id = run.id, worktree = %path, error = %err,
                    "cannot remove a run's worktree");
            }
        }
        tip
    }

    /// Removes the worktree folders of runs that are over (or unknown to this database), then
    /// prunes the records of vanished worktrees in every configured repository and every
    /// repository a folder was removed from. Returns how many folders it removed.
    pub async fn sweep_worktrees(&self) -> Result<usize, StoreError> {
        let mut repos: BTreeSet<PathBuf> = self
            .config
            .agent_types
            .values()
            .filter(|t| t.isolation == Isolation::Worktree)
            .filter_map(|t| t.repo.as_deref().map(worktree::absolute))
            .collect();
        let mut removed = 0;
        let entries = std::fs::read_dir(self.worktrees_dir())
            .into_iter()
            .flatten()
            .flatten();
        for entry in entries {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("run-"))
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let run = match self.store.run(id).await {
                Ok(run) if run.status.is_live() => continue,
                Ok(run) => Some(run),
                Err(StoreError::Refused(Refused::NotFound(_))) => None,
                Err(err) => return Err(err),
            };
            let path = entry.path();
            let result = match run.and_then(|r| r.repo) {
                Some(repo) => {
                    let repo = PathBuf::from(repo);
                    let result = worktree::remove(&repo, &path).await.map_err(|e| e.to_string());
                    repos.insert(repo);
                    result
                }
                None => tokio::fs::remove_dir_all(&path).await.map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => removed += 1,
                Err(err) => tracing::warn!(worktree = %path.display(), error = %err,
                    "cannot remove the worktree of a run that is over"),
            }
        }
        for repo in repos {
            if let Err(err) = worktree::prune(&repo).await {
                tracing::warn!(repo = %repo.display(), error = %err, "cannot prune a repository's worktrees");
            }
        }
        Ok(removed)
    }
}
