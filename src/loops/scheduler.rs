//! Wiring loops to tokio-cron-scheduler. Runs of one loop never overlap (a tick that finds the
//! loop still running is skipped); a run that fails or panics is recorded and never stops the
//! others; every run is stored and announced as a `loop.ran` event. When several nodes share
//! the registry, scheduled and woken runs happen on the leader only, except for the kinds in
//! [`EVERY_NODE`]; a run asked for by hand runs on the node asked.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::Timestamp;
use crate::store::{LoopRun, NewLoopRun};

use super::{LoopContext, LoopDef, Schedule};

/// Kinds that run on every node: each host's own state (its load gates its own spawns), and
/// the pruning of each node's data folder (run logs, worktrees; the log itself only on the
/// leader).
pub const EVERY_NODE: &[&str] = &["system-status", "retention-backup"];

struct Entry {
    def: LoopDef,
    /// Set when the loops stop: no new run starts after that.
    halted: Arc<std::sync::atomic::AtomicBool>,
    /// Held while a run is in progress, by the task doing the run (so a caller that stops
    /// waiting does not release it early).
    running: Arc<Mutex<()>>,
}

impl Entry {
    /// True when this node runs the loop's scheduled and woken runs now.
    fn runs_here(&self, ctx: &LoopContext) -> bool {
        EVERY_NODE.contains(&self.def.kind.as_str()) || ctx.cluster.leads()
    }
}

/// A loop as the API lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoopInfo {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// `every 10s` or a cron expression.
    pub schedule: String,
    /// Scheduled or not.
    pub enabled: bool,
    /// Where it was defined.
    pub source: String,
    /// Its last recorded run.
    pub last_run: Option<LoopRun>,
    /// Failed runs among those kept.
    pub failures: i64,
    /// When it runs next (null when disabled or stopped).
    pub next_run_at: Option<Timestamp>,
    /// Is a run in progress now?
    pub running: bool,
}

/// Why a loop could not be run on demand.
#[derive(Debug, thiserror::Error)]
pub enum RunNowError {
    /// No loop has that name.
    #[error("no loop named {0:?}")]
    NotFound(String),
    /// A run is already in progress.
    #[error("loop {0:?} is running already")]
    Busy(String),
    /// The run could not be recorded.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The configured loops and their scheduler.
pub struct Loops {
    entries: Vec<Arc<Entry>>,
    ctx: Arc<LoopContext>,
    /// Tells the tasks that wake loops on new work to stop.
    stopping: tokio::sync::watch::Sender<bool>,
    scheduler: Mutex<Option<(JobScheduler, HashMap<String, Uuid>)>>,
}

impl Loops {
    /// Loops ready to start.
    pub fn new(defs: Vec<LoopDef>, ctx: LoopContext) -> Self {
        let halted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        Self {
            entries: defs
                .into_iter()
                .map(|def| {
                    Arc::new(Entry {
                        def,
                        halted: halted.clone(),
                        running: Arc::new(Mutex::new(())),
                    })
                })
                .collect(),
            ctx: Arc::new(ctx),
            stopping: tokio::sync::watch::channel(false).0,
            scheduler: Mutex::new(None),
        }
    }

    /// What loop runs may use.
    pub fn context(&self) -> &LoopContext {
        &self.ctx
    }

    /// Schedules every enabled loop.
    pub async fn start(&self) -> anyhow::Result<()> {
        let scheduler = JobScheduler::new().await?;
        let mut ids = HashMap::new();
        for entry in self.entries.iter().filter(|e| e.def.enabled) {
            let tick = {
                let entry = entry.clone();
                let ctx = self.ctx.clone();
                move |_id, _lock| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
                    let entry = entry.clone();
                    let ctx = ctx.clone();
                    Box::pin(async move {
                        if !entry.runs_here(&ctx) {
                            return;
                        }
                        match run_entry(&entry, &ctx).await {
                            None => {
                                tracing::debug!(loop_name = %entry.def.name, "still running; tick skipped")
                            }
                            Some(Err(err)) => {
                                tracing::error!(loop_name = %entry.def.name, error = %err, "cannot record a loop run")
                            }
                            Some(Ok(_)) => {}
                        }
                    })
                }
            };
            let job = match &entry.def.schedule {
                Schedule::Every(every) => Job::new_repeated_async(*every, tick)?,
                Schedule::Cron(expr) => Job::new_async(expr.as_str(), tick)?,
            };
            ids.insert(entry.def.name.clone(), scheduler.add(job).await?);
        }
        for entry in self.entries.iter().filter(|e| e.def.enabled) {
            let signal = if entry.def.imp.woken_by_work() {
                self.ctx.store.bus().watch_work()
            } else if entry.def.imp.woken_by_outbox() {
                self.ctx.store.bus().watch_outbox()
            } else {
                continue;
            };
            tokio::spawn(wake_on(
                entry.clone(),
                self.ctx.clone(),
                signal,
                self.stopping.subscribe(),
            ));
        }
        scheduler.start().await?;
        tracing::info!(loops = ids.len(), "loops scheduled");
        *self.scheduler.lock().await = Some((scheduler, ids));
        Ok(())
    }

    /// Stops scheduling and waits for runs in progress to finish.
    pub async fn stop(&self) {
        for entry in &self.entries {
            entry.halted.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.stopping.send_replace(true);
        if let Some((mut scheduler, _)) = self.scheduler.lock().await.take() {
            if let Err(err) = scheduler.shutdown().await {
                tracing::warn!(error = %err, "the loop scheduler did not stop cleanly");
            }
        }
        // Wait out runs in progress, so none outlives the store.
        for entry in &self.entries {
            drop(entry.running.lock().await);
        }
    }

    /// Runs one loop now (even a disabled one) and returns its record.
    pub async fn run_now(&self, name: &str) -> Result<LoopRun, RunNowError> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.def.name == name)
            .ok_or_else(|| RunNowError::NotFound(name.to_string()))?;
        match run_entry(entry, &self.ctx).await {
            Some(recorded) => Ok(recorded?),
            None => Err(RunNowError::Busy(name.to_string())),
        }
    }

    /// Every loop with its schedule, last and next run.
    pub async fn list(&self) -> crate::store::StoreResult<Vec<LoopInfo>> {
        let mut last = self.ctx.store.last_loop_runs().await?;
        let guard = self.scheduler.lock().await;
        let mut out = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let def = &entry.def;
            let next_run_at = match &*guard {
                Some((scheduler, ids)) => match ids.get(&def.name) {
                    Some(id) => {
                        let mut scheduler = scheduler.clone();
                        scheduler
                            .next_tick_for_job(*id)
                            .await
                            .ok()
                            .flatten()
                            .map(|t| Timestamp(t.timestamp_millis()))
                    }
                    None => None,
                },
                None => None,
            };
            let (last_run, failures) = match last.remove(&def.name) {
                Some((run, failures)) => (Some(run), failures),
                None => (None, 0),
            };
            out.push(LoopInfo {
                name: def.name.clone(),
                kind: def.kind.clone(),
                schedule: def.schedule.to_string(),
                enabled: def.enabled,
                source: def.source.clone(),
                last_run,
                failures,
                next_run_at,
                running: entry.running.try_lock().is_err(),
            });
        }
        Ok(out)
    }
}

/// Runs `entry` whenever `work` signals; a signal during a run gets another run.
async fn wake_on(
    entry: Arc<Entry>,
    ctx: Arc<LoopContext>,
    mut work: tokio::sync::watch::Receiver<u64>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = work.changed() => if changed.is_err() { return },
            _ = stopping.changed() => return,
        }
        work.borrow_and_update();
        // The leader's own wake-up runs it (a node that becomes leader wakes these loops).
        if !entry.runs_here(&ctx) {
            continue;
        }
        loop {
            match run_entry(&entry, &ctx).await {
                Some(Err(err)) => {
                    tracing::error!(loop_name = %entry.def.name, error = %err, "cannot record a loop run")
                }
                Some(Ok(_)) => {}
                // A scheduled run is under way and may have missed this work: run again after it.
                None if entry.halted.load(std::sync::atomic::Ordering::SeqCst) => return,
                // Leadership may have passed meanwhile.
                None if !entry.runs_here(&ctx) => break,
                None => {
                    drop(entry.running.lock().await);
                    continue;
                }
            }
            break;
        }
    }
}

/// Runs `entry` once unless it is running already (`None` then), catching errors and panics,
/// and records the run. The run and its record happen in a task of their own that holds the
/// loop's guard, so they complete even if the caller stops waiting.
async fn run_entry(entry: &Arc<Entry>, ctx: &Arc<LoopContext>) -> Option<crate::store::StoreResult<LoopRun>> {
    if entry.halted.load(std::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    let guard = entry.running.clone().try_lock_owned().ok()?;
    let entry = entry.clone();
    let ctx = ctx.clone();
    let run = tokio::spawn(async move {
        let _guard = guard;
        let started_at = Timestamp::now();
        let body = {
            let imp = entry.def.imp.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move { imp.run_once(&ctx).await })
        };
        let (ok, summary, details) = match body.await {
            Ok(Ok(outcome)) => (true, outcome.summary, outcome.details),
            Ok(Err(err)) => (false, format!("error: {err:#}"), json!({})),
            Err(join) => {
                let why = match join.try_into_panic() {
                    Ok(panic) => panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into()),
                    Err(_) => "cancelled".into(),
                };
                (false, format!("panicked: {why}"), json!({}))
            }
        };
        if !ok {
            tracing::warn!(loop_name = %entry.def.name, %summary, "loop run failed");
        }
        let record = NewLoopRun {
            loop_name: entry.def.name.clone(),
            kind: entry.def.kind.clone(),
            started_at,
            ok,
            summary,
            details,
        };
        ctx.store.record_loop_run(record).await
    });
    match run.await {
        Ok(recorded) => Some(recorded),
        Err(join) => Some(Err(crate::store::StoreError::Corrupt(format!(
            "loop run task failed: {join}"
        )))),
    }
}
