//! Spawned runs: an agent process the server started for one task.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use utoipa::ToSchema;

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
}
