//! Spawned runs: an agent process the server started for one task.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use utoipa::ToSchema;

use super::task::Deliverable;
use super::Timestamp;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Claimed its task; the process is being started.
    Starting,
    /// The process is alive.
    Running,
    /// Exited having completed its task.
    Succeeded,
    /// Exited without completing its task, or could not start.
    Failed,
    /// Stopped at its timeout.
    TimedOut,
    /// Stopped on request, or because its task was cancelled or its lease lost.
    Killed,
    /// Found gone after a server restart.
    Lost,
}

impl RunStatus {
    const ALL: [RunStatus; 7] = [
        RunStatus::Starting,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Killed,
        RunStatus::Lost,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Starting => "starting",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Killed => "killed",
            RunStatus::Lost => "lost",
        }
    }

    /// Starting and running runs are live; the others are over.
    pub fn is_live(self) -> bool {
        matches!(self, RunStatus::Starting | RunStatus::Running)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

/// A spawned run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Run {
    /// Run id.
    pub id: i64,
    /// The task it works on.
    pub task_id: i64,
    /// The agent type started.
    pub agent_type: String,
    /// Its status.
    pub status: RunStatus,
    /// The agent name its lease is held under (`run-<id>`).
    pub holder: String,
    /// The fence of its claim.
    pub fence: Option<i64>,
    /// The process id (also its process group id).
    pub pid: Option<i64>,
    /// When it was started.
    pub started_at: Timestamp,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// Exit code, when it exited by itself.
    pub exit_code: Option<i64>,
    /// Last sampled CPU use (100 = one core).
    pub cpu_percent: Option<f64>,
    /// Last sampled resident memory, bytes.
    pub memory_bytes: Option<i64>,
    /// Why it failed or was stopped.
    pub error: Option<String>,
    /// The repository its worktree was made from (agent types with `isolation = "worktree"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The folder of its own git worktree (removed when the run ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// The branch it worked on; kept after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit its branch started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The commit its branch pointed at when the run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_head: Option<String>,
    /// Commits on its branch beyond `base` when the run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_commits: Option<i64>,
    /// The node that started it: its process runs on that node's host.
    pub node: String,
}

impl Run {
    /// The run, working in the worktree `made` for it.
    pub fn in_worktree(self, made: &RunWorktree) -> Run {
        Run {
            repo: Some(made.repo.clone()),
            worktree: Some(made.path.clone()),
            branch: Some(made.branch.clone()),
            base: Some(made.base.clone()),
            ..self
        }
    }

    /// Its branch as a deliverable, once the run ended with commits on it.
    pub fn deliverable(&self) -> Option<Deliverable> {
        let tip = BranchTip {
            head: self.branch_head.clone()?,
            commits: self.branch_commits?,
        };
        tip.deliverable(self.branch.as_deref()?)
    }
}

/// Where a run works when its agent type isolates runs in git worktrees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunWorktree {
    /// The repository the worktree belongs to.
    pub repo: String,
    /// The worktree's folder.
    pub path: String,
    /// The branch made for the run.
    pub branch: String,
    /// The commit the branch starts from.
    pub base: String,
}

/// What a run's branch held when the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchTip {
    /// The commit the branch points at.
    pub head: String,
    /// Commits on it beyond its base.
    pub commits: i64,
}

impl BranchTip {
    /// The branch `branch` as a task's deliverable: only a branch that holds work is one.
    pub fn deliverable(&self, branch: &str) -> Option<Deliverable> {
        (self.commits > 0).then(|| Deliverable {
            kind: "branch".into(),
            reference: branch.to_string(),
            note: Some(format!("{} (+{} commits)", self.head, self.commits)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Change;
    use serde_json::json;

    #[test]
    fn run_exited_names_a_branch_only_when_the_run_had_one() {
        let samples = [
            json!({"run_id": 1, "status": "failed", "exit_code": 1, "error": "e"}),
            json!({"run_id": 1, "status": "succeeded", "exit_code": 0, "error": null,
                   "branch": "taskyard/1-1", "branch_head": "abc", "branch_commits": 1}),
        ];
        for data in samples {
            let change = Change::from_parts("run.exited", data.clone());
            assert!(matches!(change, Change::RunExited { .. }), "{data}");
            assert_eq!(change.parts(), ("run.exited".to_string(), data), "round trip");
        }
    }

    #[test]
    fn a_branch_is_a_deliverable_only_with_commits() {
        let tip = BranchTip {
            head: "abc123".into(),
            commits: 2,
        };
        let d = tip.deliverable("taskyard/1-2").unwrap();
        assert_eq!(
            (d.kind.as_str(), d.reference.as_str(), d.note.as_deref()),
            ("branch", "taskyard/1-2", Some("abc123 (+2 commits)"))
        );
        let empty = BranchTip {
            head: "abc123".into(),
            commits: 0,
        };
        assert_eq!(empty.deliverable("taskyard/1-2"), None);
    }
}
