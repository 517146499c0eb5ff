//! Records of loop runs, each announced as a `loop.ran` event in the same transaction.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::domain::event::NewEvent;
use crate::domain::Timestamp;

use super::{Store, StoreError, StoreResult, Wake};

/// How many run records are kept per loop.
const KEEP_PER_LOOP: i64 = 200;

/// A finished run, to record.
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

/// A recorded run.
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

type RunRow = (i64, String, String, i64, i64, bool, String, String);

fn to_run(row: RunRow) -> StoreResult<LoopRun> {
    let (id, loop_name, kind, started, finished, ok, summary, details) = row;
    Ok(LoopRun {
        id,
        loop_name,
        kind,
        started_at: Timestamp(started),
        finished_at: Timestamp(finished),
        ok,
        summary,
        details: serde_json::from_str(&details)
            .map_err(|e| StoreError::Corrupt(format!("run details: {e}")))?,
    })
}

impl Store {
    /// Records a finished run with its `loop.ran` event and prunes old records of that loop.
    pub async fn record_loop_run(&self, run: NewLoopRun) -> StoreResult<LoopRun> {
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let row: RunRow = sqlx::query_as(
            "INSERT INTO loop_runs (loop_name, kind, started_at, finished_at, ok, summary, details) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             RETURNING id, loop_name, kind, started_at, finished_at, ok, summary, details",
        )
        .bind(&run.loop_name)
        .bind(&run.kind)
        .bind(run.started_at.millis())
        .bind(now.millis())
        .bind(run.ok)
        .bind(&run.summary)
        .bind(run.details.to_string())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM loop_runs WHERE loop_name = ?1 AND id <= \
             (SELECT id FROM loop_runs WHERE loop_name = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(&run.loop_name)
        .bind(KEEP_PER_LOOP)
        .execute(&mut *tx)
        .await?;
        let recorded = to_run(row)?;
        let event = NewEvent {
            kind: "loop.ran",
            task_id: None,
            actor: Some(format!("loop:{}", run.loop_name)),
            data: json!({"loop": run.loop_name, "kind": run.kind, "ok": run.ok, "summary": run.summary,
                         "run_id": recorded.id}),
        };
        self.commit(tx, now, vec![event], Wake::default()).await?;
        Ok(recorded)
    }

    /// The newest runs of one loop, newest first.
    pub async fn loop_runs(&self, loop_name: &str, limit: i64) -> StoreResult<Vec<LoopRun>> {
        let rows: Vec<RunRow> = sqlx::query_as(
            "SELECT id, loop_name, kind, started_at, finished_at, ok, summary, details FROM loop_runs \
             WHERE loop_name = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(loop_name)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(to_run).collect()
    }

    /// The last run of every loop that has run, and how many of its recent runs failed.
    pub async fn last_loop_runs(&self) -> StoreResult<HashMap<String, (LoopRun, i64)>> {
        let rows: Vec<RunRow> = sqlx::query_as(
            "SELECT id, loop_name, kind, started_at, finished_at, ok, summary, details FROM loop_runs \
             WHERE id IN (SELECT MAX(id) FROM loop_runs GROUP BY loop_name)",
        )
        .fetch_all(&self.reader)
        .await?;
        let failures: Vec<(String, i64)> =
            sqlx::query_as("SELECT loop_name, COUNT(*) FROM loop_runs WHERE ok = 0 GROUP BY loop_name")
                .fetch_all(&self.reader)
                .await?;
        let failures: HashMap<String, i64> = failures.into_iter().collect();
        rows.into_iter()
            .map(|row| {
                let run = to_run(row)?;
                let failed = failures.get(&run.loop_name).copied().unwrap_or(0);
                Ok((run.loop_name.clone(), (run, failed)))
            })
            .collect()
    }
}
