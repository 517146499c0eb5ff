//! git, for runs that work in a worktree of their own: resolving the commit a run's branch
//! starts from, `git worktree add`, reading what the branch holds when the run ends, removing
//! the worktree and pruning a repository's records of worktrees that are gone.
//!
//! git is run as a program with an argv (never through a shell), in its own process group, with
//! a timeout that kills the group (hooks included), and with an environment built from nothing
//! (the allow-list of `environment.rs`): no `GIT_DIR` or `GIT_WORK_TREE` of the server's can
//! point it elsewhere, and it never prompts. The repository must be `repo` itself, not a folder
//! somewhere inside one. Which runs get a worktree, and when it goes, is `isolation.rs`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::domain::BranchTip;

use super::environment;
use super::process;

/// Longest one git command may take before it is killed.
const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Uncommitted changes named in a refusal; the rest are counted.
const CHANGES_SHOWN: usize = 5;

/// Why git did not do what was asked. The message is git's own where git gave one.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git could not be started at all.
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    /// git took longer than [`GIT_TIMEOUT`] and was killed.
    #[error("`git {command}` in {repo} took longer than {}s and was stopped", GIT_TIMEOUT.as_secs())]
    Timeout {
        /// The subcommand.
        command: String,
        /// The repository.
        repo: String,
    },
    /// git refused or failed.
    #[error("{0}")]
    Failed(String),
}

/// `path` made absolute (a relative one is taken from the server's working folder), so git,
/// run in the repository, reads it the same way.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// What one git command did.
struct Said {
    /// True when it exited with success.
    ok: bool,
    /// Its stdout.
    stdout: String,
    /// Its stderr, trimmed.
    stderr: String,
}

/// Runs `git -C repo ARGS…` and returns what it said.
async fn run<S: AsRef<OsStr>>(repo: &Path, args: &[S]) -> Result<Said, GitError> {
    let repo = absolute(repo);
    let mut command = tokio::process::Command::new("git");
    command
        .arg("-C")
        .arg(&repo)
        .args(args)
        .env_clear()
        .envs(environment::inherited())
        .env("GIT_TERMINAL_PROMPT", "0")
        // `git status` must not write the index while runs commit beside it.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // git looks for the repository in `repo` only, never in a folder above it.
    if let Some(parent) = repo.parent().filter(|p| !p.as_os_str().is_empty()) {
        command.env("GIT_CEILING_DIRECTORIES", parent);
    }
    let child = command.spawn().map_err(GitError::Spawn)?;
    let pgid = child.id().map(i64::from).unwrap_or_default();
    let output = match tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.map_err(GitError::Spawn)?,
        Err(_) => {
            // git itself dies as its handle is dropped; a hook it started goes with the group.
            process::signal_group(pgid, Signal::SIGKILL);
            let words: Vec<_> = args
                .iter()
                .take(2)
                .map(|a| a.as_ref().to_string_lossy())
                .collect();
            return Err(GitError::Timeout {
                command: words.join(" "),
                repo: repo.display().to_string(),
            });
        }
    };
    Ok(Said {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// Runs `git -C repo ARGS…` and returns its stdout, or git's stderr as the error.
async fn git<S: AsRef<OsStr>>(repo: &Path, args: &[S]) -> Result<String, GitError> {
    let said = run(repo, args).await?;
    if said.ok {
        return Ok(said.stdout);
    }
    Err(GitError::Failed(if said.stderr.is_empty() {
        let words: Vec<_> = args
            .iter()
            .take(2)
            .map(|a| a.as_ref().to_string_lossy())
            .collect();
        format!("`git {}` in {} failed", words.join(" "), repo.display())
    } else {
        said.stderr
    }))
}

/// The commit `rev` names in `repo`, or None when it names none.
async fn commit_of(repo: &Path, rev: &str) -> Result<Option<String>, GitError> {
    let said = run(
        repo,
        &["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")],
    )
    .await?;
    match (said.ok, said.stderr.is_empty()) {
        (true, _) => Ok(Some(said.stdout.trim().to_string())),
        // `--quiet` says nothing when there is no such commit; anything said is a real failure.
        (false, true) => Ok(None),
        (false, false) => Err(GitError::Failed(said.stderr)),
    }
}

/// The commit a run's branch starts from in `repo`: `base` resolved to its sha, or, without a
/// base, the sha of the repository's HEAD. Without a base the working tree must have no
/// uncommitted changes to tracked files: the run would start from HEAD, which does not hold
/// them, and could not be what was meant (untracked files are not looked at).
pub async fn resolve_base(repo: &Path, base: Option<&str>) -> Result<String, GitError> {
    let bare = git(repo, &["rev-parse", "--is-bare-repository"]).await?;
    let sha = match (commit_of(repo, base.unwrap_or("HEAD")).await?, base) {
        (Some(sha), _) => sha,
        (None, Some(base)) => {
            return Err(GitError::Failed(format!(
                "base {base:?} names no commit in {}",
                repo.display()
            )))
        }
        (None, None) => {
            return Err(GitError::Failed(format!(
                "{} has no commit to start a branch from (its HEAD is unborn)",
                repo.display()
            )))
        }
    };
    if base.is_none() && bare.trim() != "true" {
        let status = git(repo, &["status", "--porcelain", "--untracked-files=no"]).await?;
        let changes: Vec<&str> = status.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if !changes.is_empty() {
            let mut shown = changes[..changes.len().min(CHANGES_SHOWN)].join(", ");
            if changes.len() > CHANGES_SHOWN {
                shown.push_str(&format!(" and {} more", changes.len() - CHANGES_SHOWN));
            }
            return Err(GitError::Failed(format!(
                "the working tree of {} has uncommitted changes ({shown}); a run's branch would \
                 start from HEAD ({sha}), which does not hold them: commit or stash them, or set \
                 the agent type's base",
                repo.display()
            )));
        }
    }
    Ok(sha)
}

/// `git worktree add -b BRANCH PATH BASE`: a new branch at `base`, checked out in `path`.
pub async fn add(repo: &Path, path: &Path, branch: &str, base: &str) -> Result<(), GitError> {
    let args: [&OsStr; 6] = [
        "worktree".as_ref(),
        "add".as_ref(),
        "-b".as_ref(),
        branch.as_ref(),
        path.as_os_str(),
        base.as_ref(),
    ];
    git(repo, &args).await.map(drop)
}

/// What branch `branch` holds beyond `base`: its head and how many commits it has that `base`
/// has not. None when the branch no longer exists.
pub async fn inspect(repo: &Path, branch: &str, base: &str) -> Result<Option<BranchTip>, GitError> {
    let Some(head) = commit_of(repo, &format!("refs/heads/{branch}")).await? else {
        return Ok(None);
    };
    let count = git(repo, &["rev-list", "--count", &format!("{base}..{head}")]).await?;
    let commits = count
        .trim()
        .parse()
        .map_err(|_| GitError::Failed(format!("git rev-list --count said {:?}", count.trim())))?;
    Ok(Some(BranchTip { head, commits }))
}

/// Removes the worktree in `path` (with whatever was not committed in it) and the repository's
/// record of it. A folder git will not remove (the repository is gone, say) is deleted anyway.
pub async fn remove(repo: &Path, path: &Path) -> Result<(), GitError> {
    let args: [&OsStr; 4] = [
        "worktree".as_ref(),
        "remove".as_ref(),
        "--force".as_ref(),
        path.as_os_str(),
    ];
    let removed = git(repo, &args).await;
    if removed.is_ok() && !path.exists() {
        return Ok(());
    }
    if path.exists() {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(path))
            .await
            .map_err(|e| GitError::Failed(format!("the removal stopped: {e}")))?
            .map_err(|e| GitError::Failed(format!("cannot delete the worktree's folder: {e}")))?;
    }
    // The repository's record of the deleted folder goes too; a repository that is gone has none.
    match prune(repo).await {
        Ok(()) => Ok(()),
        Err(_) if !repo.exists() => Ok(()),
        Err(err) => Err(err),
    }
}

/// `git worktree prune`: forgets worktrees whose folders are gone.
pub async fn prune(repo: &Path) -> Result<(), GitError> {
    git(repo, &["worktree", "prune"]).await.map(drop)
}

/// `git branch -D BRANCH`: for a branch made for a run that never started.
pub async fn delete_branch(repo: &Path, branch: &str) -> Result<(), GitError> {
    git(repo, &["branch", "-D", branch]).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs git in `dir` with an identity (a test machine may have none), failing on an error.
    fn sh_git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-C"])
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        sh_git(dir.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
        sh_git(dir.path(), &["add", "a.txt"]);
        sh_git(dir.path(), &["commit", "-q", "-m", "first"]);
        dir
    }

    #[tokio::test]
    async fn a_worktree_is_made_inspected_and_removed() {
        let repo = repo();
        let head = sh_git(repo.path(), &["rev-parse", "HEAD"]);
        assert_eq!(resolve_base(repo.path(), None).await.unwrap(), head);
        assert_eq!(resolve_base(repo.path(), Some("main")).await.unwrap(), head);
        let err = resolve_base(repo.path(), Some("nope"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\" names no commit"), "{err}");

        let place = tempfile::tempdir().unwrap();
        let path = place.path().join("run-1");
        add(repo.path(), &path, "taskyard/1-1", &head).await.unwrap();
        let tip = inspect(repo.path(), "taskyard/1-1", &head)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((tip.head.as_str(), tip.commits), (head.as_str(), 0));
        std::fs::write(path.join("b.txt"), "b\n").unwrap();
        sh_git(&path, &["add", "b.txt"]);
        sh_git(&path, &["commit", "-q", "-m", "second"]);
        let tip = inspect(repo.path(), "taskyard/1-1", &head)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tip.commits, 1);
        assert_eq!(tip.head, sh_git(repo.path(), &["rev-parse", "taskyard/1-1"]));
        let err = add(repo.path(), &place.path().join("run-2"), "taskyard/1-1", &head)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "git's own message: {err}");

        std::fs::write(path.join("uncommitted.txt"), "x\n").unwrap();
        remove(repo.path(), &path).await.unwrap();
        assert!(!path.exists());
        let list = sh_git(repo.path(), &["worktree", "list", "--porcelain"]);
        assert_eq!(list.matches("worktree ").count(), 1, "{list}");
        assert!(
            inspect(repo.path(), "taskyard/1-1", &head)
                .await
                .unwrap()
                .is_some(),
            "kept"
        );
        assert_eq!(inspect(repo.path(), "gone", &head).await.unwrap(), None);
    }

    #[tokio::test]
    async fn uncommitted_changes_refuse_a_head_base_and_a_folder_is_no_repository() {
        let repo = repo();
        std::fs::write(repo.path().join("untracked.txt"), "u\n").unwrap();
        assert!(
            resolve_base(repo.path(), None).await.is_ok(),
            "untracked files do not count"
        );
        std::fs::write(repo.path().join("a.txt"), "changed\n").unwrap();
        let err = resolve_base(repo.path(), None).await.unwrap_err().to_string();
        assert!(
            err.contains("uncommitted changes (M a.txt)") && err.contains("base"),
            "{err}"
        );
        assert!(
            resolve_base(repo.path(), Some("main")).await.is_ok(),
            "a base is a commit"
        );

        // A folder inside a repository is not taken for it.
        let inner = repo.path().join("sub");
        std::fs::create_dir(&inner).unwrap();
        let err = resolve_base(&inner, Some("main")).await.unwrap_err().to_string();
        assert!(err.contains("not a git repository"), "{err}");
        let err = resolve_base(Path::new("/no/such/repo"), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/repo"), "{err}");
    }
}
