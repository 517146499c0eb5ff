//! What the maintenance loops record and do: each loop run with its `loop.ran` event, stall
//! flags, settling pending tasks whose dependencies all finished.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Timestamp;

use super::StoreResult;

/// A finished loop run, to record.
#[derive(Debug, Clone)]
pub struct NewLoopRun {
    /// The loop's name.
    pub loop_name: String,
    /// Its kind.
    pub kind: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Did it succeed?
    pub ok: bool,
    /// One line on what it did, or the error.
    pub summary: String,
    /// Kind-specific details.
    pub details: serde_json::Value,
}

/// A recorded loop run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LoopRun {
    /// Run id.
    pub id: i64,
    /// The loop's name.
    pub loop_name: String,
    /// Its kind.
    pub kind: String,
    /// Start time.
    pub started_at: Timestamp,
    /// End time.
    pub finished_at: Timestamp,
    /// Did it succeed?
    pub ok: bool,
    /// What it did, or the error.
    pub summary: String,
    /// Kind-specific details.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Loop records and maintenance.
#[async_trait::async_trait]
pub trait Upkeep: Send + Sync {
    /// Records a finished loop run with its `loop.ran` event and prunes old records of that
    /// loop (the newest 200 are kept).
    async fn record_loop_run(&self, run: NewLoopRun) -> StoreResult<LoopRun>;

    /// The newest runs of one loop, newest first.
    async fn loop_runs(&self, loop_name: &str, limit: i64) -> StoreResult<Vec<LoopRun>>;

    /// The last run of every loop that has run, and how many of its recent runs failed.
    async fn last_loop_runs(&self) -> StoreResult<HashMap<String, (LoopRun, i64)>>;

    /// Flags in-progress tasks whose lease is alive but which reported no progress for `quiet`
    /// (once per stall: progress clears the flag). Returns the newly stalled task ids.
    async fn flag_stalled_tasks(&self, quiet: Duration) -> StoreResult<Vec<i64>>;

    /// Settles pending tasks whose dependencies have all finished: available when all
    /// completed, blocked when one failed or was cancelled. Returns (released, blocked).
    async fn settle_pending(&self) -> StoreResult<(usize, usize)>;
}
