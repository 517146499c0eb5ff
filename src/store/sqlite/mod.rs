//! The SQLite backend: the embedded registry in one file of the data folder. Every change runs
//! on one writer thread with group commit (`engine.rs`); reads use read-only connections. The
//! lease lifecycle — every operation that moves a task through its statuses — is in
//! `lifecycle.rs`; creating and editing tasks in `tasks.rs`; the rest one file per trait.

mod agents;
mod deps;
mod engine;
mod events;
mod lifecycle;
mod nodes;
mod outbox;
mod reservations;
mod routing;
mod rows;
mod runs;
mod sessions;
mod tasks;
mod upkeep;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};

use rusqlite::{Connection, OptionalExtension};

use crate::domain::{Task, Timestamp};
use crate::store::{work_of, EventBus, Registry, Store, StoreError, StoreOptions, StoreResult, Work};

use engine::{Readers, Shared, Writer};

/// SQLite's primary result code for a full disk.
const SQLITE_FULL: i32 = 13;

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match &err {
            rusqlite::Error::SqliteFailure(e, _) if e.extended_code & 0xff == SQLITE_FULL => {
                StoreError::StorageFull(err.to_string())
            }
            rusqlite::Error::SqliteFailure(e, _)
                if e.code == rusqlite::ErrorCode::SystemIoFailure && io_full(&err) =>
            {
                StoreError::StorageFull(err.to_string())
            }
            _ => StoreError::Database(err.to_string()),
        }
    }
}

/// True for an I/O error whose message says the disk is full.
fn io_full(err: &rusqlite::Error) -> bool {
    let text = err.to_string();
    text.contains("No space left") || text.contains("quota")
}

/// How long a health check's answer is trusted.
const HEALTH_TTL_MS: i64 = 1_000;

/// The SQLite registry.
pub struct Sqlite {
    writer: Writer,
    readers: Arc<Readers>,
    shared: Arc<Shared>,
    options: StoreOptions,
    path: std::path::PathBuf,
    /// When the database last answered a health check (ms on the registry clock).
    healthy_at: AtomicI64,
}

/// Opens (creating if needed) the SQLite registry at `path` and applies its migrations.
pub async fn open(path: &Path, options: StoreOptions) -> anyhow::Result<Store> {
    migrate(path).await?;
    let shared = Arc::new(Shared {
        bus: EventBus::default(),
        principals: Default::default(),
        writing: Default::default(),
        telemetry: options.telemetry.clone(),
    });
    let writer = Writer::start(
        path,
        options.durability,
        options.human_kinds.clone(),
        shared.clone(),
    )?;
    Ok(Arc::new(Sqlite {
        writer,
        readers: Arc::new(Readers::new(path, options.readers)),
        shared,
        options,
        path: path.to_path_buf(),
        healthy_at: AtomicI64::new(0),
    }))
}

/// Creates the database file if needed and brings its schema up to date (`migrations/sqlite`).
async fn migrate(path: &Path) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection as _};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .foreign_keys(true)
        .connect()
        .await?;
    sqlx::migrate!("migrations/sqlite").run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

impl Sqlite {
    /// Runs `op` as one change on the writer (see [`engine::Tx`]).
    async fn write<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut engine::Tx<'_>) -> StoreResult<R> + Send + 'static,
    {
        self.writer.write(op).await
    }

    /// Runs `query` on a read-only connection.
    async fn read<R, F>(&self, query: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        self.readers.read(query).await
    }
}

/// Task `id` as it stands, if it exists.
fn find_task(conn: &Connection, id: i64) -> StoreResult<Option<Task>> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {} FROM tasks WHERE id = ?1", rows::TASK_COLUMNS));
    conn.prepare_cached(&SQL)?
        .query_row([id], rows::task)
        .optional()?
        .transpose()
}

/// Task `id` as it stands; not found is a refusal.
fn fetch_task(conn: &Connection, id: i64) -> StoreResult<Task> {
    find_task(conn, id)?.ok_or_else(|| StoreError::not_found(format!("task #{id}")))
}

/// The work the tasks `ids` offer claim-next now, as long polls need to judge it (see
/// [`work_of`]); tasks that are not claimable are left out.
fn claimable_work(
    conn: &Connection,
    ids: &[i64],
    human_kinds: &[String],
    now: Timestamp,
) -> StoreResult<Vec<Work>> {
    let mut select = conn.prepare_cached(&format!(
        "SELECT {}, routed_to FROM tasks WHERE id = ?1",
        rows::TASK_COLUMNS
    ))?;
    let mut work = Vec::new();
    for id in ids {
        let found = select
            .query_row([id], |row| {
                let routed: Option<String> = row.get(rows::TASK_COLUMN_COUNT)?;
                Ok((rows::task(row)?, routed))
            })
            .optional()?;
        let Some((task, routed)) = found else { continue };
        let routed = routed.and_then(|r| r.parse().ok());
        work.extend(work_of(&task?, routed, human_kinds, now));
    }
    Ok(work)
}

/// The tasks `sql` (selecting [`rows::TASK_COLUMNS`]) finds with `params`.
fn query_tasks(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Vec<Task>> {
    let mut statement = conn.prepare_cached(sql)?;
    let found = statement
        .query_map(params, rows::task)?
        .collect::<Result<Vec<_>, _>>()?;
    found.into_iter().collect()
}

#[async_trait::async_trait]
impl Registry for Sqlite {
    fn bus(&self) -> &EventBus {
        &self.shared.bus
    }

    fn options(&self) -> &StoreOptions {
        &self.options
    }

    async fn health(&self) -> StoreResult<()> {
        if !self.shared.writing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the database writer has stopped".into()));
        }
        let now = Timestamp::now().millis();
        if now - self.healthy_at.load(Ordering::Relaxed) < HEALTH_TTL_MS {
            return Ok(());
        }
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await?;
        self.healthy_at.store(now, Ordering::Relaxed);
        Ok(())
    }

    async fn backup_into(&self, target: &Path) -> StoreResult<()> {
        let (source, target) = (self.path.clone(), target.to_path_buf());
        // On a connection of its own, so writers are not held up.
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&source)?;
            conn.execute("VACUUM INTO ?1", [target.to_string_lossy()])?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Database(format!("the backup stopped: {e}")))?
    }

    async fn close(&self) {
        self.writer.stop().await;
        self.readers.close();
    }
}
