//! The task registry's contract: what the rest of the server may ask of storage, as a small set
//! of traits named for what callers use, with the types they exchange. Each backend lives in a
//! folder of its own (`sqlite/`, `postgres/`) and implements them all; nothing outside a
//! backend's folder names a database driver. The lease lifecycle's rules are plain functions in
//! `domain::lifecycle` (and `domain::claim`, `domain::cancel`); a backend only applies them.
//!
//! - [`Tasks`] (`tasks.rs`): create, read, list, edit; scope; the facts `why` and the overview need.
//! - [`Leases`] (`leases.rs`): the lease lifecycle — claim, claim-next, progress, complete, fail,
//!   release, block, unblock, cancel and the reaping of expired leases.
//! - [`Reservations`] (`reservations.rs`): paths held under a lease.
//! - [`Routes`] (`routing.rs`): the router's decisions.
//! - [`EventLog`] (`events.rs`), [`Agents`] (`agents.rs`), [`Runs`] (`runs.rs`),
//!   [`Outbox`] (`outbox.rs`), [`Upkeep`] (`upkeep.rs`: loop records and maintenance),
//!   [`Nodes`] (`nodes.rs`: the servers sharing the registry and the leader lease).
//! - [`DashboardSessions`] (`sessions.rs`): dashboard sessions and one-time login codes.
//! - [`EventBus`] (`bus.rs`): live events and wake-ups, published after each commit; long polls
//!   wait in line in `waiters.rs`.
//! - `why.rs`: whether a task is claimable and why, from the facts any backend gathers.
//! - What both backends share: `rows.rs` (every stored row read into its domain object, through
//!   a backend's `rows::Columns`), `announce.rs` (what a change announces once it commits),
//!   `principals.rs` (principals remembered by token hash).

mod agents;
mod announce;
mod bus;
mod error;
mod events;
mod leases;
pub mod nodes;
mod outbox;
pub mod postgres;
mod principals;
mod reservations;
mod routing;
mod rows;
mod runs;
mod sessions;
pub mod sqlite;
mod tasks;
mod upkeep;
mod waiters;
mod webhooks;
pub mod why;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use agents::Agents;
pub use bus::EventBus;
pub use error::{StoreError, StoreResult};
pub use events::EventLog;
pub use leases::{ClaimFilter, Claimed, Leases};
pub use nodes::{Node, Nodes, Term};
pub use outbox::{NotificationFilter, NotificationPage, Outbox, Outgoing};
pub use reservations::Reservations;
pub use routing::{Routes, Routing};
pub use runs::{LiveRun, Runs};
pub use sessions::{DashboardSession, DashboardSessions, NewSession, SessionLimits};
pub use tasks::{DependencyState, MinuteCount, Stats, TaskFilter, TaskPage, Tasks, WhyFacts};
pub use upkeep::{LoopRun, NewLoopRun, Upkeep};
pub use waiters::{work_of, Waiting, Wants, Work};
pub use webhooks::Webhooks;
pub use why::{Decision, Why};

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Survives a process crash (SQLite: WAL with `synchronous=NORMAL`); the default.
    #[default]
    Normal,
    /// Survives power loss: every commit reaches the disk (SQLite: `synchronous=FULL`).
    Full,
}

/// Tunables a store needs from config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Connections (or threads) serving reads.
    pub readers: u32,
    /// Base of the exponential retry backoff after a retryable failure.
    pub retry_backoff: Duration,
    /// Kinds that belong to people: claim-next never hands them to an agent.
    pub human_kinds: Vec<String>,
    /// Deepest subtask level allowed (a top-level task is level 0).
    pub max_depth: i64,
    /// Most subtasks one task may have.
    pub max_fanout: i64,
    /// Where the store counts its work (write batches, commits, expiries, loop runs, emails).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The node this server is (`server.node_id`): the runs it starts are its own.
    pub node: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            readers: 4,
            retry_backoff: Duration::from_secs(30),
            human_kinds: vec!["architecture".into(), "strategic".into()],
            max_depth: 3,
            max_fanout: 50,
            telemetry: Arc::default(),
            node: "local".into(),
        }
    }
}

/// Everything a registry backend provides.
#[async_trait::async_trait]
pub trait Registry:
    Tasks
    + Leases
    + Reservations
    + Routes
    + EventLog
    + Agents
    + Runs
    + Outbox
    + Upkeep
    + Webhooks
    + DashboardSessions
    + Nodes
{
    /// Where this registry announces what it commits.
    fn bus(&self) -> &EventBus;

    /// The options it was opened with.
    fn options(&self) -> &StoreOptions;

    /// Whether the database answers (for `/healthz`); cheap: at most one round trip a second.
    async fn health(&self) -> StoreResult<()>;

    /// Writes a consistent copy of the whole registry to `target` (which must not exist).
    async fn backup_into(&self, target: &Path) -> StoreResult<()>;

    /// Whether [`Registry::backup_into`] can copy this registry into a file (SQLite); a
    /// database server's registry is backed up with the server's own tools instead.
    fn backs_up_to_files(&self) -> bool {
        true
    }

    /// Finishes the work taken and closes the database.
    async fn close(&self);
}

/// The registry the server runs on, shared by every part of it.
pub type Store = Arc<dyn Registry>;
