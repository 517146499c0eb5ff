//! The SQLite store: every SQL statement in taskyard lives under this module, behind functions
//! named for intent. The agent work cycle (claim-next, progress, complete) runs on a batching
//! writer thread (see `writer`); other changes go through one async writer connection. A gate
//! lets only one of the two write at a time, so they never fight over SQLite's write lock;
//! reads use a small pool of read-only connections. Each change commits together with its
//! events, which are then published to subscribers in commit order.

mod agents;
mod cancel;
mod cycle;
mod deps;
mod events;
mod leases;
mod loop_runs;
mod maintenance;
mod notifications;
mod rows;
mod runs;
mod stats;
mod tasks;
mod waiters;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use tokio::sync::{broadcast, watch, Mutex, OwnedMutexGuard};

use crate::domain::event::NewEvent;
use crate::domain::{Event, InputError, Timestamp};

pub use leases::{ClaimFilter, Claimed};
pub use loop_runs::{LoopRun, NewLoopRun};
pub use notifications::{NotificationFilter, NotificationPage, Outgoing};
pub use runs::LiveRun;
pub use stats::{MinuteCount, Stats};
pub use tasks::{TaskFilter, TaskPage, Why};
pub use waiters::{Waiting, Wants, Work};

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: survives a process crash (default).
    #[default]
    Normal,
    /// `synchronous=FULL`: an fsync at every commit; survives power loss.
    Full,
}

/// What a store operation can refuse; the HTTP layer maps each to a status and code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Someone else holds a live lease on the task.
    #[error("task is already claimed by {holder}")]
    AlreadyClaimed {
        /// The current holder.
        holder: String,
    },
    /// The task cannot be claimed now (pending, blocked, final, backing off…).
    #[error("{0}")]
    NotReady(String),
    /// The caller's fence is stale: its lease is gone.
    #[error("{0}")]
    LeaseLost(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A value refers to something that does not fit (unknown dependency, cycle…).
    #[error(transparent)]
    Invalid(#[from] InputError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The database failed (on the batching writer).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// Stored data could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the database could not be written because its disk (or quota) is full: SQLite's
    /// `SQLITE_FULL` ("database or disk is full"), or an I/O error saying so.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(db)) => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                // The primary result code is the low byte of the extended one.
                .is_some_and(|code| code & 0xff == SQLITE_FULL),
            StoreError::Db(sqlx::Error::Io(io)) => is_storage_full(io),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(err, _)) => {
                err.code == rusqlite::ErrorCode::DiskFull
            }
            _ => false,
        }
    }
}

/// False for a writer connection still counted inside a transaction when it is handed out (the
/// pool then closes it and opens a fresh one). A write the disk refused can end a transaction
/// inside SQLite while sqlx still counts it open, its ROLLBACK failing too; every later
/// transaction on that connection would become a savepoint inside it that never commits, its
/// changes acknowledged yet never visible and lost at shutdown. Closing the connection discards
/// nothing that was committed.
fn writer_usable(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    let stale = conn.is_in_transaction();
    if stale {
        tracing::warn!("the database writer was left inside a failed transaction; reopening it");
    }
    !stale
}

/// SQLite's primary result code for a full disk.
const SQLITE_FULL: i32 = 13;

/// True for an I/O error that means "no space left" (`ENOSPC`) or "quota exceeded" (`EDQUOT`).
fn is_storage_full(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::StorageFull || err.kind() == std::io::ErrorKind::QuotaExceeded
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Tunables the store needs from config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Read-only connections in the reader pool.
    pub readers: u32,
    /// Base of the exponential retry backoff after a retryable failure.
    pub retry_backoff: Duration,
    /// Kinds that belong to people: claim-next never hands them to an agent.
    pub human_kinds: Vec<String>,
    /// Deepest subtask level allowed (a top-level task is level 0).
    pub max_depth: i64,
    /// Most subtasks one task may have.
    pub max_fanout: i64,
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
        }
    }
}

/// What a change wakes: the tasks it made claimable (their ids; each wakes at most one waiting
/// long poll that could take it), and the loops woken by work (the assignment loop), which any
/// such task wakes, and so does freed capacity.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    tasks: Vec<i64>,
    loops: bool,
}

impl Wake {
    /// These tasks may have become claimable.
    pub(crate) fn tasks(tasks: Vec<i64>) -> Self {
        Self {
            loops: !tasks.is_empty(),
            tasks,
        }
    }

    /// Task `id` became claimable if `ready`.
    pub(crate) fn task_if(id: i64, ready: bool) -> Self {
        Self::tasks(if ready { vec![id] } else { Vec::new() })
    }

    /// No task, but capacity was freed (a run ended): the loops woken by work look again.
    pub(crate) fn capacity() -> Self {
        Self {
            tasks: Vec::new(),
            loops: true,
        }
    }
}

/// Where committed changes are announced: the event channel and the wake-up signals.
#[derive(Clone)]
pub(crate) struct Publisher {
    /// Committed events, for SSE and other live subscribers.
    events: broadcast::Sender<Event>,
    /// Bumped whenever claimable work may have appeared (wakes the loops woken by work).
    work: watch::Sender<u64>,
    /// Long polls waiting for work, woken task by task.
    waiters: waiters::Waiters,
    /// Bumped whenever something may need a notification (wakes the notify loop).
    outbox: watch::Sender<u64>,
}

impl Publisher {
    /// Publishes committed events, announces `work` to waiting long polls and, with `loops`,
    /// wakes the loops woken by work; events that may call for a notification wake the notify
    /// loop.
    fn publish(&self, events: Vec<Event>, work: Vec<Work>, loops: bool) {
        if events
            .iter()
            .any(|e| crate::domain::notification::TRIGGER_EVENTS.contains(&e.kind.as_str()))
        {
            self.outbox.send_modify(|n| *n = n.wrapping_add(1));
        }
        for event in events {
            // No subscribers is fine: the events are in the database.
            let _ = self.events.send(event);
        }
        if loops || !work.is_empty() {
            self.work.send_modify(|n| *n = n.wrapping_add(1));
        }
        self.waiters.announce(work);
    }
}

/// A write transaction on the async writer connection, holding the write gate until it ends.
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _gate: OwnedMutexGuard<()>,
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl WriteTx {
    /// Commits a transaction that recorded no events.
    async fn commit(self, store: &Store) -> StoreResult<()> {
        self.tx.commit().await?;
        store.principals.forget();
        Ok(())
    }
}

/// The task registry. Cheap to clone; all clones share the pools and channels.
#[derive(Clone)]
pub struct Store {
    /// The async writer connection (every change but the work cycle).
    writer: SqlitePool,
    /// The batching writer thread (the work cycle).
    batch: writer::Writer,
    /// Held by whichever writer is writing.
    gate: Arc<Mutex<()>>,
    /// Read-only connections for queries.
    reader: SqlitePool,
    /// Where committed changes are announced.
    publisher: Publisher,
    /// Claim-next attempts run so far.
    claim_attempts: Arc<std::sync::atomic::AtomicU64>,
    /// Principals by token hash, forgotten whenever an async write commits.
    principals: Arc<agents::PrincipalCache>,
    /// Bumped whenever an agent's token is replaced or revoked (ends the streams it held open).
    tokens: watch::Sender<u64>,
    /// Options.
    options: std::sync::Arc<StoreOptions>,
    /// How connections are opened (for one-off connections such as backups).
    connect: Arc<SqliteConnectOptions>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(path: &Path, options: StoreOptions) -> anyhow::Result<Self> {
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .idle_timeout(None)
            .max_lifetime(None)
            .before_acquire(|conn, _| Box::pin(async move { Ok(writer_usable(conn)) }))
            .connect_with(base.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .acquire_timeout(Duration::from_secs(60))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.clone().read_only(true))
            .await?;
        let (events, _) = broadcast::channel(4096);
        let (work, _) = watch::channel(0);
        let (outbox, _) = watch::channel(0);
        let publisher = Publisher {
            events,
            work,
            waiters: waiters::Waiters::default(),
            outbox,
        };
        let gate = Arc::new(Mutex::new(()));
        let batch = writer::Writer::start(
            path,
            options.durability,
            gate.clone(),
            publisher.clone(),
            rows::to_json(&options.human_kinds),
        )?;
        let (tokens, _) = watch::channel(0);
        Ok(Self {
            writer,
            batch,
            gate,
            reader,
            publisher,
            claim_attempts: Default::default(),
            principals: Default::default(),
            tokens,
            options: std::sync::Arc::new(options),
            connect: Arc::new(base),
        })
    }

    /// Subscribes to events committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.publisher.events.subscribe()
    }

    /// How many live subscribers the event channel has (event streams, MCP sessions).
    pub fn event_subscribers(&self) -> usize {
        self.publisher.events.receiver_count()
    }

    /// Subscribes to "work may have appeared" signals (for the loops woken by work).
    pub fn watch_work(&self) -> watch::Receiver<u64> {
        self.publisher.work.subscribe()
    }

    /// A long poll's place in line for work it `wants` (see `waiters.rs`).
    pub fn waiter(&self, wants: Wants) -> Waiting {
        self.publisher.waiters.waiter(wants)
    }

    /// How many long polls are in line for work at this moment (for tests and diagnostics).
    pub fn work_waiters(&self) -> usize {
        self.publisher.waiters.armed()
    }

    /// How many claim-next attempts have run (for tests and diagnostics).
    pub fn claim_next_attempts(&self) -> u64 {
        self.claim_attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Subscribes to "a notification may be due" signals.
    pub fn watch_outbox(&self) -> watch::Receiver<u64> {
        self.publisher.outbox.subscribe()
    }

    /// Wakes the notify loop.
    pub fn wake_outbox(&self) {
        self.publisher.outbox.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Subscribes to "a token may have stopped working" signals.
    pub fn watch_tokens(&self) -> watch::Receiver<u64> {
        self.tokens.subscribe()
    }

    /// Tells token holders to look again: a token was replaced or revoked.
    fn tokens_changed(&self) {
        self.tokens.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Writes `events` in `tx`, commits the change and its events together, then publishes
    /// them and wakes what `wake` says.
    async fn commit(
        &self,
        mut tx: WriteTx,
        now: Timestamp,
        events: Vec<NewEvent>,
        wake: Wake,
    ) -> StoreResult<()> {
        let events = events::insert(&mut tx, now, events).await?;
        let work = waiters::claimable(&mut tx, &wake.tasks, now, &self.options.human_kinds).await?;
        tx.tx.commit().await?;
        self.principals.forget();
        // Still under the gate: no later commit can publish first.
        self.publisher.publish(events, work, wake.loops);
        Ok(())
    }

    /// Begins a write transaction on the async writer, once the gate is free.
    async fn begin_write(&self) -> StoreResult<WriteTx> {
        let gate = self.gate.clone().lock_owned().await;
        let tx = self.writer.begin().await?;
        Ok(WriteTx { tx, _gate: gate })
    }

    /// Stops the batching writer and closes both pools, flushing the WAL.
    pub async fn close(&self) {
        self.batch.stop().await;
        self.reader.close().await;
        self.writer.close().await;
    }

    /// A quick liveness check of the database.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
