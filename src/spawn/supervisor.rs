//! Starting an agent process for a task and watching it until it ends: the lease is kept alive
//! while it lives, CPU and memory are sampled, output goes to a capped log, and a timeout, a
//! kill, a cancelled task or a lost lease stop its whole process group (TERM, then KILL). A run
//! of an agent type with `isolation = "worktree"` starts in a worktree of its own, whose branch
//! is read when the run ends (see `isolation.rs`).

use std::borrow::Cow;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::{broadcast, watch, Mutex};

use crate::config::AgentTypeConfig;
use crate::domain::input::ProgressSpec;
use crate::domain::{
    BranchTip, Change, Event, Principal, Refused, Routed, Run, RunStatus, RunWorktree, Status, Task,
};
use crate::store::{Claimed, StoreError};
use crate::token::{hash_token, new_token};

use super::environment;
use super::process::{self, Sampler};
use super::prompt::{self, Context};
use super::{Spawner, StopRequest};

/// How often a live run is sampled (and its lease renewed when due).
const TICK: Duration = Duration::from_secs(1);
/// Longest run when the agent type sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3_600);

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The task could not be claimed (someone else got it first, say).
    #[error("could not claim the task: {0}")]
    Claim(StoreError),
    /// The program could not be started; the task goes to a person.
    #[error("{0}")]
    Launch(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run's log file, and the output that could not be written to it.
struct LogFile {
    file: tokio::fs::File,
    run_id: i64,
    /// Bytes of output dropped since writing last failed (on a full disk, say).
    lost: u64,
}

impl LogFile {
    /// Appends `bytes`. Output that cannot be written is dropped (the process must never block
    /// on its pipe), reported once in the server's log, and noted in the run's log once writing
    /// works again.
    async fn append(&mut self, bytes: &[u8]) {
        if self.lost > 0 {
            let note = format!(
                "\n[taskyard: about {} bytes of output lost: the log could not be written]\n",
                self.lost
            );
            if self.write(note.as_bytes()).await.is_err() {
                self.lost += bytes.len() as u64;
                return;
            }
            self.lost = 0;
        }
        if let Err(err) = self.write(bytes).await {
            if self.lost == 0 {
                tracing::warn!(run_id = self.run_id, error = %err,
                    "cannot write a run's log; its output is dropped until writing works again");
            }
            self.lost += bytes.len() as u64;
        }
    }

    /// Writes and flushes, so a failure is this write's own (a file's writes are buffered).
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes).await?;
        self.file.flush().await
    }
}

/// Copies a pipe into the run's log until the cap, then keeps draining so the process never
/// blocks on a full pipe.
async fn copy_capped(
    mut from: impl AsyncRead + Unpin,
    log: Arc<Mutex<LogFile>>,
    written: Arc<AtomicU64>,
    cap: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let before = written.fetch_add(n as u64, Ordering::SeqCst);
        if before >= cap {
            continue;
        }
        let take = (cap - before).min(n as u64) as usize;
        let mut file = log.lock().await;
        file.append(&buf[..take]).await;
        if take < n {
            file.append(b"\n[taskyard: log cap reached; further output dropped]\n")
                .await;
        }
    }
}

/// Creates `path` as a new private file; a file left there by an earlier database's run of the
/// same id goes first.
async fn fresh_private_file(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    let _ = tokio::fs::remove_file(path).await;
    tokio::fs::OpenOptions::from(crate::files::new_private_file())
        .open(path)
        .await
}

impl Spawner {
    /// Claims `task` for a new run of `agent_type` (the router's `reason`) and starts its
    /// process. A run is recorded only once its claim succeeded.
    pub(super) async fn start(
        self: &Arc<Self>,
        task: &Task,
        agent_type: &str,
        reason: &str,
        cfg: &AgentTypeConfig,
    ) -> Result<Run, StartError> {
        let token = new_token();
        // Subscribe before claiming, so a cancellation right after the claim is seen.
        let events = self.store.bus().subscribe();
        let lease = Duration::from_secs(self.config.server.lease_seconds);
        let (run, claim, who) = self
            .store
            .start_run(
                task.id,
                agent_type,
                &hex::encode(hash_token(&token)),
                lease,
                reason,
            )
            .await
            .map_err(|err| match err {
                StoreError::Refused(_) => StartError::Claim(err),
                other => StartError::Store(other),
            })?;
        match self.launch(&run, &claim, &token, cfg).await {
            Ok((child, made)) => {
                let mut run = run;
                if let Some(made) = &made {
                    run = run.in_worktree(made);
                }
                let pid = child.id().map(i64::from).unwrap_or_default();
                // The process runs now: whatever happens, it gets a supervisor.
                if let Err(err) = self
                    .store
                    .run_started(&run, claim.lease.fence, pid, process::start_time(pid))
                    .await
                {
                    tracing::error!(run_id = run.id, error = %err, "could not record a run's start");
                }
                let (stop_tx, stop_rx) = watch::channel(None);
                self.stops
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(run.id, stop_tx);
                let spawner = self.clone();
                let timeout = cfg.timeout.map(|s| s.0).unwrap_or(DEFAULT_TIMEOUT);
                let run2 = run.clone();
                tokio::spawn(async move {
                    spawner
                        .supervise(run2, child, claim, who, events, stop_rx, timeout)
                        .await;
                });
                Ok(run)
            }
            Err(message) => {
                // Not the task's fault: hand it back with the attempt, and tell people.
                let _ = self
                    .store
                    .release(
                        task.id,
                        &who,
                        claim.lease.fence,
                        Some(format!("could not start {agent_type}")),
                    )
                    .await;
                self.store
                    .run_ended(&run, RunStatus::Failed, None, Some(message.clone()), None)
                    .await?;
                Err(StartError::Launch(message))
            }
        }
    }

    /// What earlier attempts at the claimed task left, as a paragraph for the prompt: empty for
    /// a task claimed for the first time, or when the handoff cannot be read (it is logged).
    async fn handoff_prose(&self, claim: &Claimed) -> String {
        if claim.lease.fence <= 1 {
            return String::new();
        }
        let task = &claim.task;
        match super::handoff::gather(&self.store, &self.runs_dir(), task.id, Some(claim.lease.fence)).await {
            Ok(h) => h.prose(task.attempts, task.max_attempts).unwrap_or_default(),
            Err(err) => {
                tracing::warn!(task_id = task.id, error = %err, "could not read a task's handoff for its prompt");
                String::new()
            }
        }
    }

    /// Starts the process: argv from the agent type with placeholders expanded, a clean
    /// environment (see `environment.rs`) with the `TASKYARD_*` variables, its own process group,
    /// output piped into the run log; for an agent type with `isolation = "worktree"`, in a
    /// worktree made for the run (returned too; nothing of it is left when the start fails).
    async fn launch(
        &self,
        run: &Run,
        claim: &Claimed,
        token: &str,
        cfg: &AgentTypeConfig,
    ) -> Result<(Child, Option<RunWorktree>), String> {
        let task = &claim.task;
        let fence = claim.lease.fence;
        let prompt_path = self.run_dir(run.id).join("prompt.md");
        let prompt_file = prompt_path.to_string_lossy();
        let handoff = self.handoff_prose(claim).await;
        let mut ctx = Context {
            task,
            run_id: run.id,
            fence,
            prompt: "",
            prompt_file: &prompt_file,
            worktree: "",
            branch: "",
            handoff: &handoff,
        };
        let plan = self.plan_worktree(run.id, cfg, prompt::render(cfg.branch_template(), &ctx));
        let worktree_path = plan.as_ref().map(|p| p.path.to_string_lossy().into_owned());
        if let (Some(plan), Some(path)) = (&plan, &worktree_path) {
            ctx.worktree = path;
            ctx.branch = &plan.branch;
        }
        let template = match &cfg.prompt {
            Some(template) => Cow::Borrowed(template.as_str()),
            None => prompt::default_prompt(plan.is_some()),
        };
        let rendered = prompt::render(&template, &ctx);
        ctx.prompt = &rendered;
        let argv = prompt::argv(&cfg.command, &ctx)?;
        let Some((program, args)) = argv.split_first() else {
            return Err(format!("agent type {} has no command", run.agent_type));
        };
        crate::files::private_dir(&self.runs_dir())
            .and_then(|()| crate::files::private_dir(&self.run_dir(run.id)))
            .map_err(|e| format!("cannot create the run's folder: {e}"))?;
        let mut prompt_out = fresh_private_file(&prompt_path)
            .await
            .map_err(|e| format!("cannot create the prompt file: {e}"))?;
        let written = async {
            prompt_out.write_all(rendered.as_bytes()).await?;
            prompt_out.flush().await
        };
        written
            .await
            .map_err(|e| format!("cannot write the prompt file: {e}"))?;
        let log = fresh_private_file(&self.log_path(run.id))
            .await
            .map_err(|e| format!("cannot create the run log: {e}"))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(environment::program_env(&cfg.env_passthrough, &cfg.env))
            .env("TASKYARD_URL", &self.url)
            .env("TASKYARD_TOKEN", token)
            .env("TASKYARD_TASK_ID", task.id.to_string())
            .env("TASKYARD_FENCE", fence.to_string())
            .env("TASKYARD_RUN_ID", run.id.to_string())
            .env("TASKYARD_PROMPT_FILE", &prompt_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // A restart leaves runs alive for reconciliation, so the server never kills on drop.
            .kill_on_drop(false);
        // A prompt too big for the environment is in the file only (a program that needs it
        // from the environment would not start at all otherwise).
        if prompt::fits_env("TASKYARD_PROMPT", &rendered) {
            cmd.env("TASKYARD_PROMPT", &rendered);
        }
        // Made last, so only a program that cannot start leaves one to undo; recorded before
        // the program starts, so a crash at any moment leaves reconciliation its branch to read.
        let made = match &plan {
            Some(plan) => Some(self.make_worktree(plan, cfg.base.as_deref()).await?),
            None => None,
        };
        if let Some(made) = &made {
            if let Err(err) = self.store.run_worktree(run.id, made).await {
                self.discard_worktree(made).await;
                return Err(format!("cannot record the run's worktree: {err}"));
            }
        }
        match &made {
            Some(made) => {
                cmd.current_dir(&made.path)
                    .env("TASKYARD_WORKTREE", &made.path)
                    .env("TASKYARD_BRANCH", &made.branch);
            }
            None => {
                if let Some(dir) = &cfg.workdir {
                    cmd.current_dir(dir);
                }
            }
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                if let Some(made) = &made {
                    self.discard_worktree(made).await;
                }
                return Err(format!("cannot start {program:?}: {e}"));
            }
        };
        let log = Arc::new(Mutex::new(LogFile {
            file: log,
            run_id: run.id,
            lost: 0,
        }));
        let written = Arc::new(AtomicU64::new(0));
        let cap = self.config.spawner.log_max_bytes;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(copy_capped(out, log.clone(), written.clone(), cap));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(copy_capped(err, log, written, cap));
        }
        Ok((child, made))
    }

    /// Watches a run until it ends, then settles its task and records how it ended.
    #[allow(clippy::too_many_arguments)]
    async fn supervise(
        self: Arc<Self>,
        run: Run,
        mut child: Child,
        claim: Claimed,
        who: Principal,
        mut events: broadcast::Receiver<Event>,
        mut stop: watch::Receiver<Option<StopRequest>>,
        timeout: Duration,
    ) {
        let task_id = claim.task.id;
        let fence = claim.lease.fence;
        let pgid = child.id().map(i64::from).unwrap_or_default();
        let mut sampler = Sampler::new(pgid);
        let mut shutdown = self.shutdown.clone();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(TICK);
        let renew_every = Duration::from_secs((self.config.server.lease_seconds / 3).max(1));
        let mut renewed = tokio::time::Instant::now();
        // Set once the agent has completed its task: no more lease renewals.
        let mut finished = false;
        let ended: Result<std::process::ExitStatus, StopRequest> = loop {
            let request = tokio::select! {
                status = child.wait() => match status {
                    Ok(status) => break Ok(status),
                    Err(e) => StopRequest { status: RunStatus::Failed, reason: format!("lost track of the process: {e}") },
                },
                _ = &mut deadline => StopRequest {
                    status: RunStatus::TimedOut,
                    reason: format!("exceeded its {}s timeout", timeout.as_secs()),
                },
                _ = stop.changed() => match stop.borrow().clone() {
                    Some(request) => request,
                    None => continue,
                },
                event = events.recv() => match event {
                    Ok(e) if e.task_id == Some(task_id) && matches!(e.change, Change::TaskCancelled { .. }) => StopRequest {
                        status: RunStatus::Killed,
                        reason: "its task was cancelled".into(),
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => match self.store.task(&crate::domain::TaskRef::Id(task_id)).await {
                        Ok(t) if t.status == Status::Cancelled => StopRequest { status: RunStatus::Killed, reason: "its task was cancelled".into() },
                        _ => continue,
                    },
                    _ => continue,
                },
                _ = shutdown.changed() => {
                    // Let go: the process lives on and the next start reconciles it.
                    self.stops.lock().unwrap_or_else(|p| p.into_inner()).remove(&run.id);
                    return;
                }
                _ = tick.tick() => {
                    if let Some((cpu, memory)) = sampler.sample() {
                        let _ = self.store.run_sampled(run.id, cpu, memory).await;
                    }
                    if finished || renewed.elapsed() < renew_every {
                        continue;
                    }
                    renewed = tokio::time::Instant::now();
                    let beat = ProgressSpec { fence, percent: None, note: None, lease_seconds: None };
                    match self.store.report_progress(task_id, &who, beat).await {
                        Err(StoreError::Refused(Refused::LeaseLost(m) | Refused::Forbidden(m))) => {
                            // Completing its task ends the lease too: then the agent may finish up.
                            let task = self.store.task(&crate::domain::TaskRef::Id(task_id)).await;
                            if task.is_ok_and(|t| t.status == Status::Completed) {
                                finished = true;
                                continue;
                            }
                            StopRequest { status: RunStatus::Killed, reason: format!("its lease is gone: {m}") }
                        }
                        _ => continue,
                    }
                }
            };
            break Err(request);
        };
        let (status, exit_code, error) = match ended {
            Ok(exit) => {
                // Sweep up whatever the agent left running in its group.
                process::signal_group(pgid, Signal::SIGKILL);
                (None, exit.code().map(i64::from), None)
            }
            Err(request) => {
                self.stop_group(&mut child, pgid).await;
                (Some(request.status), None, Some(request.reason))
            }
        };
        self.stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run.id);
        // Read once the process is gone, so the branch is as the run left it.
        let tip = self.close_worktree(&run).await;
        // A busy or failing database must not leave the run "running": try a few times.
        for attempt in 1..=5 {
            match self
                .settle(
                    &run,
                    task_id,
                    &who,
                    fence,
                    status,
                    exit_code,
                    error.clone(),
                    tip.clone(),
                )
                .await
            {
                Ok(()) => break,
                Err(err) => {
                    tracing::error!(run_id = run.id, attempt, error = %err, "could not settle a finished run");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                }
            }
        }
    }

    /// TERM to the group, KILL after the grace time, and reap the leader.
    async fn stop_group(&self, child: &mut Child, pgid: i64) {
        process::signal_group(pgid, Signal::SIGTERM);
        let grace = self.config.spawner.kill_grace.0;
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            process::signal_group(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
        } else {
            // The leader went; stragglers in its group do not get the grace again.
            process::signal_group(pgid, Signal::SIGKILL);
        }
    }

    /// Records how a run ended and what became of its task: completed → succeeded; still held
    /// → a retryable failure (the store retries it after a backoff, or fails it when its
    /// attempts are used up, and then a person is told). `tip` is what the run's branch holds,
    /// for a run in a worktree.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn settle(
        &self,
        run: &Run,
        task_id: i64,
        who: &Principal,
        fence: i64,
        stopped: Option<RunStatus>,
        exit_code: Option<i64>,
        error: Option<String>,
        tip: Option<BranchTip>,
    ) -> Result<(), StoreError> {
        let task = self.store.task(&crate::domain::TaskRef::Id(task_id)).await?;
        let completed = task.status == Status::Completed;
        let still_held = task
            .lease
            .as_ref()
            .is_some_and(|l| l.holder == run.holder && l.fence == fence);
        // An agent that completed its task succeeded, even if it was then stopped on its way out.
        let status = match stopped {
            _ if completed => RunStatus::Succeeded,
            Some(status) => status,
            None => RunStatus::Failed,
        };
        let error = if completed { None } else { error };
        let error = error.or_else(|| {
            (!completed && stopped.is_none()).then(|| match exit_code {
                Some(code) => format!("exited with code {code} without completing its task"),
                None => "was killed by a signal without completing its task".into(),
            })
        });
        if still_held {
            let reason = format!(
                "run #{} of {} {}",
                run.id,
                run.agent_type,
                error.as_deref().unwrap_or("ended")
            );
            let after = self.store.fail(task_id, who, fence, reason.clone(), true).await?;
            if after.status == Status::Failed {
                self.store
                    .record_routing(
                        task_id,
                        Routed::Human,
                        &format!(
                            "spawned agents used all {} attempts; last: {reason}",
                            after.max_attempts
                        ),
                        false,
                    )
                    .await?;
            }
        }
        self.store.run_ended(run, status, exit_code, error, tip).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_lost_to_a_full_disk_is_noted_once_writing_works_again() {
        // Every write to /dev/full fails as on a full disk.
        let full = tokio::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .await
            .unwrap();
        let mut log = LogFile {
            file: full,
            run_id: 1,
            lost: 0,
        };
        log.append(b"lost 1\n").await;
        log.append(b"lost 2\n").await;
        assert_eq!(log.lost, 14);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        log.file = tokio::fs::File::create(&path).await.unwrap();
        log.append(b"kept\n").await;
        assert_eq!(log.lost, 0);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "\n[taskyard: about 14 bytes of output lost: the log could not be written]\nkept\n"
        );
    }
}
