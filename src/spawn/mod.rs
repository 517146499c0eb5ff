//! The auto-spawner: routing available work (`router.rs`), the assignment pass that applies it
//! (`assign.rs`), starting and supervising agent processes (`supervisor.rs`), settling runs
//! left over from a previous server (`reconcile.rs`), prompt rendering (`prompt.rs`), the
//! clean environment programs start with (`environment.rs`), runs in git worktrees of
//! their own (`isolation.rs`, with the git commands in `worktree.rs`), and the handoff a task
//! that changed hands carries (`handoff.rs`).

mod assign;
pub mod environment;
pub mod handoff;
mod isolation;
mod process;
pub mod prompt;
mod reconcile;
pub mod router;
mod supervisor;
pub mod worktree;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::Config;
use crate::domain::{Principal, Role, RunStatus};
use crate::host::HostMonitor;
use crate::store::Store;

pub use assign::AssignOutcome;

/// Why a run is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRequest {
    /// The status the run ends with.
    pub status: RunStatus,
    /// Why.
    pub reason: String,
}

/// Starts and supervises agent processes. Cheap to share behind an `Arc`.
pub struct Spawner {
    store: Store,
    config: Arc<Config>,
    url: String,
    data_dir: PathBuf,
    host: Arc<HostMonitor>,
    /// Stop switches of the runs this server supervises, by run id.
    stops: Mutex<HashMap<i64, watch::Sender<Option<StopRequest>>>>,
    /// Becomes true at shutdown: supervisors let go of their processes (restart reconciliation
    /// settles them) and no new ones are started.
    shutdown: watch::Receiver<bool>,
    /// Held for the whole of an assignment pass.
    assigning: tokio::sync::Mutex<()>,
}

/// Why `kill` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// The run is not live under this server.
    #[error("run #{0} is not running")]
    NotRunning(i64),
}

/// The log file of run `run_id` in `runs_dir`, the folder of run logs.
pub fn log_file(runs_dir: &Path, run_id: i64) -> PathBuf {
    runs_dir.join(format!("{run_id}.log"))
}

/// A run log opened at its last `bytes` bytes (all of it when shorter).
pub async fn open_log_tail(path: &Path, bytes: u64) -> std::io::Result<tokio::fs::File> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    file.seek(std::io::SeekFrom::Start(len.saturating_sub(bytes)))
        .await?;
    Ok(file)
}

impl Spawner {
    /// A spawner; call [`Spawner::reconcile`] once before the first assignment.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        url: String,
        data_dir: PathBuf,
        host: Arc<HostMonitor>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            config,
            url,
            data_dir,
            host,
            stops: Mutex::new(HashMap::new()),
            shutdown,
            assigning: tokio::sync::Mutex::new(()),
        }
    }

    /// Asks a live run to stop (TERM to its process group, then KILL after the grace time).
    pub fn kill(&self, run_id: i64, reason: &str) -> Result<(), KillError> {
        let stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
        let stop = stops.get(&run_id).ok_or(KillError::NotRunning(run_id))?;
        stop.send_replace(Some(StopRequest {
            status: RunStatus::Killed,
            reason: reason.to_string(),
        }));
        Ok(())
    }

    /// The folder of run logs.
    pub fn runs_dir(&self) -> PathBuf {
        self.data_dir.join("runs")
    }

    /// The log file of a run.
    pub fn log_path(&self, run_id: i64) -> PathBuf {
        log_file(&self.runs_dir(), run_id)
    }

    /// The folder of a run's own files (its prompt).
    pub fn run_dir(&self, run_id: i64) -> PathBuf {
        self.runs_dir().join(run_id.to_string())
    }

    /// The principal the spawner acts as when it settles leases itself.
    fn system_principal() -> Principal {
        Principal {
            agent_id: None,
            name: "spawner".into(),
            role: Role::Admin,
            kind: "spawner".into(),
            capabilities: Vec::new(),
            scope: None,
        }
    }
}
