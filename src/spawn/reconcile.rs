//! At boot, settle every run the database still calls live: a process that is still there
//! (same pid and start time) is terminated or adopted, as `spawner.on_restart` says; a vanished
//! one is marked lost. Either way its task is handed back unless it was completed, so no run
//! stays "running" forever and no lease is held by a process that no longer exists. A settled
//! run's worktree goes (its branch read first, and kept), as do the worktree folders of any
//! other run that is over.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::OnRestart;
use crate::domain::{Run, RunStatus, Status, TaskRef};
use crate::store::{LiveRun, StoreError};

use super::process;
use super::Spawner;

/// How often an adopted process is checked.
const ADOPTED_TICK: Duration = Duration::from_secs(1);

impl Spawner {
    /// Settles the runs left live by a previous server. Returns how many it found.
    pub async fn reconcile(self: &Arc<Self>) -> Result<usize, StoreError> {
        let live = self.store.live_runs().await?;
        for LiveRun { run, pid_started_at } in &live {
            let alive = match (run.pid, pid_started_at) {
                (Some(pid), Some(started)) => process::start_time(pid) == Some(*started),
                _ => false,
            };
            match (alive, self.config.spawner.on_restart) {
                (false, _) => {
                    // No signal: its pid may belong to an unrelated process by now. Survivors of
                    // its group lose their token when the run ends.
                    self.hand_back(
                        run,
                        RunStatus::Lost,
                        "its process was gone after a server restart",
                    )
                    .await?
                }
                (true, OnRestart::Terminate) => {
                    let pgid = run.pid.unwrap_or_default();
                    process::signal_group(pgid, Signal::SIGTERM);
                    let grace = self.config.spawner.kill_grace.0;
                    let deadline = tokio::time::Instant::now() + grace;
                    while process::start_time(pgid) == *pid_started_at
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    process::signal_group(pgid, Signal::SIGKILL);
                    self.hand_back(run, RunStatus::Killed, "terminated at a server restart")
                        .await?;
                }
                (true, OnRestart::Adopt) => {
                    let spawner = self.clone();
                    let (run, started) = (run.clone(), *pid_started_at);
                    tokio::spawn(async move { spawner.watch_adopted(run, started).await });
                }
            }
        }
        if !live.is_empty() {
            tracing::info!(runs = live.len(), "reconciled runs left by the previous server");
        }
        let swept = self.sweep_worktrees().await?;
        if swept > 0 {
            tracing::info!(worktrees = swept, "removed the worktrees of runs that are over");
        }
        Ok(live.len())
    }

    /// Settles the live runs of nodes that stopped beating (they died, or lost the database),
    /// once their leases have let go of their tasks: a run whose task its lease still holds is
    /// left alone, as its process may live on and work through another node. Returns how many
    /// it settled. (The leader does this, in the lease reaper's pass.)
    pub async fn settle_orphans(&self) -> Result<usize, StoreError> {
        let mut settled = 0;
        for run in self.store.orphaned_runs(crate::cluster::SILENT_AFTER).await? {
            let task = self.store.task(&TaskRef::Id(run.task_id)).await?;
            if task.lease.as_ref().is_some_and(|l| l.holder == run.holder) {
                continue;
            }
            let why = format!("its node {} stopped answering, and its lease ended", run.node);
            self.store
                .run_ended(&run, RunStatus::Lost, None, Some(why), None)
                .await?;
            settled += 1;
        }
        Ok(settled)
    }

    /// Marks a run ended and hands its task back (with the attempt) unless it was completed.
    async fn hand_back(&self, run: &Run, status: RunStatus, why: &str) -> Result<(), StoreError> {
        let task = self.store.task(&TaskRef::Id(run.task_id)).await?;
        // The task's lease has the fence even when the run died before recording it.
        let fence = task
            .lease
            .as_ref()
            .filter(|l| l.holder == run.holder)
            .map(|l| l.fence);
        if let Some(fence) = fence {
            self.store
                .release(
                    run.task_id,
                    &Self::system_principal(),
                    fence,
                    Some(format!("run #{} {why}", run.id)),
                )
                .await?;
        }
        let status = if task.status == Status::Completed {
            RunStatus::Succeeded
        } else {
            status
        };
        let tip = self.close_worktree(run).await;
        self.store
            .run_ended(run, status, None, Some(why.to_string()), tip)
            .await?;
        Ok(())
    }

    /// Keeps an adopted process's lease alive while it lives (its output after the restart is
    /// not captured), then settles it like any run that ended.
    async fn watch_adopted(self: Arc<Self>, run: Run, started: Option<i64>) {
        let Some(pid) = run.pid else { return };
        let Some(fence) = run.fence else { return };
        let who = Self::system_principal();
        let mut shutdown = self.shutdown.clone();
        let renew_every = Duration::from_secs((self.config.server.lease_seconds / 3).max(1));
        let mut renewed = tokio::time::Instant::now() - renew_every;
        loop {
            if process::start_time(pid) != started {
                break;
            }
            if renewed.elapsed() >= renew_every {
                renewed = tokio::time::Instant::now();
                let beat = crate::domain::input::ProgressSpec {
                    fence,
                    percent: None,
                    note: None,
                    lease_seconds: None,
                };
                if self.store.report_progress(run.task_id, &who, beat).await.is_err() {
                    process::signal_group(pid, Signal::SIGKILL);
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(ADOPTED_TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
        let tip = self.close_worktree(&run).await;
        let result = self
            .settle(
                &run,
                run.task_id,
                &who,
                fence,
                None,
                None,
                Some("adopted after a restart; its exit code is unknown".into()),
                tip,
            )
            .await;
        if let Err(err) = result {
            tracing::error!(run_id = run.id, error = %err, "could not settle an adopted run");
        }
    }
}
