//! Spawned runs: started in the same transaction as their claim, sampled while they live,
//! ended with an event, settled at boot.

use std::collections::HashMap;
use std::time::Duration;

use crate::domain::{BranchTip, Principal, Run, RunStatus, RunWorktree};

use super::{Claimed, StoreResult};

/// A live run as reconciliation sees it.
#[derive(Debug, Clone)]
pub struct LiveRun {
    /// The run.
    pub run: Run,
    /// The recorded start time of its process (seconds since the epoch).
    pub pid_started_at: Option<i64>,
}

/// Spawned runs.
#[async_trait::async_trait]
pub trait Runs: Send + Sync {
    /// Claims task `task_id` for a new run of `agent_type`, all in one transaction: the run
    /// (status `starting`, lease holder `run-<id>`), the run's agent with a token hashing to
    /// `token_hash` and scoped to the task, the claim, and the routing decision `reason`. When
    /// the claim is refused (another agent was first, say) nothing at all is recorded.
    async fn start_run(
        &self,
        task_id: i64,
        agent_type: &str,
        token_hash: &str,
        lease: Duration,
        reason: &str,
    ) -> StoreResult<(Run, Claimed, Principal)>;

    /// The run's git worktree was made (before its process starts): record where it works.
    async fn run_worktree(&self, run_id: i64, worktree: &RunWorktree) -> StoreResult<()>;

    /// The process started: record it with a `run.started` event (naming its branch, if any).
    async fn run_started(
        &self,
        run: &Run,
        fence: i64,
        pid: i64,
        pid_started_at: Option<i64>,
    ) -> StoreResult<()>;

    /// Stores a CPU and memory sample of a live run.
    async fn run_sampled(&self, run_id: i64, cpu_percent: f64, memory_bytes: i64) -> StoreResult<()>;

    /// The run ended: record how, with a `run.exited` event; its token dies with it. A run that
    /// ended already (settled by the leader, say) keeps its first ending and is answered as is. Ending
    /// frees capacity, so waiting work is woken. `tip` is what the run's branch held (for a
    /// run in a worktree whose branch could be read): when the branch has commits and the run
    /// completed its task, the branch is added to the task's deliverables in the same change.
    async fn run_ended(
        &self,
        run: &Run,
        status: RunStatus,
        exit_code: Option<i64>,
        error: Option<String>,
        tip: Option<BranchTip>,
    ) -> StoreResult<Run>;

    /// One run.
    async fn run(&self, id: i64) -> StoreResult<Run>;

    /// Runs, newest first, optionally of one status and/or task; `before_id` pages.
    async fn list_runs(
        &self,
        status: Option<RunStatus>,
        task_id: Option<i64>,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Run>>;

    /// This node's live runs (starting or running) with their process start times (runs
    /// recorded before nodes existed count as this node's).
    async fn live_runs(&self) -> StoreResult<Vec<LiveRun>>;

    /// Live runs whose node has not beaten within `silence` (it died, and its runs' leases
    /// run out), for the leader to settle.
    async fn orphaned_runs(&self, silence: Duration) -> StoreResult<Vec<Run>>;

    /// Live runs on this node in total, and per agent type over every node.
    async fn live_run_counts(&self) -> StoreResult<(usize, HashMap<String, usize>)>;
}
