//! The PostgreSQL backend: the same registry on a database server, for teams that outgrow one
//! machine. Every change is one transaction on a pooled connection (`tx.rs`) that appends its
//! events before it commits — the work cycle's claims and completions arriving at once share
//! one (`lifecycle/batch.rs`); lease expiry is judged by the database's clock. Reads use the pool.
//! The lease lifecycle is in `lifecycle/`; creating and editing tasks in `tasks.rs`; the rest one
//! file per trait, as in the SQLite backend.

mod agents;
mod connect;
mod deps;
mod events;
mod follow;
mod lifecycle;
mod nodes;
mod outbox;
mod reservations;
mod routing;
mod rows;
mod runs;
mod sessions;
mod statistics;
mod tasks;
mod tx;
mod upkeep;
mod webhooks;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};

use crate::domain::{Task, Timestamp};
use crate::store::principals::PrincipalCache;
use crate::store::{work_of, EventBus, Registry, Store, StoreError, StoreOptions, StoreResult, Work};

pub use connect::{check, redact};
use tx::Tx;

/// How long a health check's answer is trusted.
const HEALTH_TTL_MS: i64 = 1_000;

/// The PostgreSQL registry.
pub struct Postgres {
    pool: PgPool,
    bus: EventBus,
    principals: PrincipalCache,
    /// Publishes every node's events on this node's bus, and wakes its long polls for other
    /// nodes' work (`follow.rs`); set once at open.
    follower: std::sync::OnceLock<follow::Follower>,
    /// Groups the work cycle's requests arriving at once (`lifecycle/batch.rs`); set at open.
    batcher: std::sync::OnceLock<lifecycle::Batcher>,
    options: StoreOptions,
    /// When the database last answered a health check (ms on the server's clock).
    healthy_at: AtomicI64,
    /// Tasks created since the task table was last analyzed (`statistics.rs`).
    statistics: Arc<statistics::TaskStatistics>,
}

/// Connects to the database `url`, brings its schema up to date and opens the registry.
pub async fn open(url: &str, options: StoreOptions) -> anyhow::Result<Store> {
    let pool = connect::pool(url, options.readers).await?;
    let store = Arc::new(Postgres {
        pool,
        bus: EventBus::default(),
        // Agents may change through another server on the same database: what this one
        // remembers is trusted for a second.
        principals: PrincipalCache::trusted_for(std::time::Duration::from_secs(1)),
        follower: std::sync::OnceLock::new(),
        batcher: std::sync::OnceLock::new(),
        options,
        healthy_at: AtomicI64::new(0),
        statistics: Arc::default(),
    });
    let follower = follow::Follower::start(&store, url).await?;
    let _ = store.follower.set(follower);
    let _ = store.batcher.set(lifecycle::Batcher::start(&store));
    Ok(store)
}

impl Postgres {
    /// Begins a change: a transaction on a pooled connection, at the database's time.
    async fn begin(&self) -> StoreResult<Tx> {
        Tx::begin(&self.pool).await
    }

    /// Commits `tx` with its events and announces them; answers `value` once committed.
    async fn commit<R>(&self, tx: Tx, value: R) -> StoreResult<R> {
        tx.commit(self).await?;
        Ok(value)
    }

    /// Makes the emails and webhook deliveries this node took for sending before it stopped
    /// due again: whatever it was sending then was cut short. (When the node registers as
    /// started, see `nodes.rs`.)
    async fn free_taken(&self) -> StoreResult<()> {
        for table in ["notifications", "webhook_deliveries"] {
            sqlx::query(&format!(
                "UPDATE {table} SET next_attempt_at = LEAST(next_attempt_at, taskyard_now_ms()), taken_by = NULL \
                 WHERE taken_by = $1 AND status = 'queued'"
            ))
            .bind(&self.options.node)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Wakes the follower: this node committed events.
    fn kick_follower(&self) {
        if let Some(follower) = self.follower.get() {
            follower.kick.notify_one();
        }
    }

    /// A pooled connection for reads.
    async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        Ok(self.pool.acquire().await?)
    }
}

/// Task `id` as it stands, if it exists.
async fn find_task(conn: &mut PgConnection, id: i64) -> StoreResult<Option<Task>> {
    let row = sqlx::query(rows::SELECT_TASK_BY_ID)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| rows::task(&row)).transpose()
}

/// Task `id` as it stands; not found is a refusal.
async fn fetch_task(conn: &mut PgConnection, id: i64) -> StoreResult<Task> {
    find_task(conn, id)
        .await?
        .ok_or_else(|| StoreError::not_found(format!("task #{id}")))
}

/// Task `id` as it stands, its row locked until the transaction ends; not found is a refusal.
async fn lock_task(conn: &mut PgConnection, id: i64) -> StoreResult<Task> {
    let row = sqlx::query(&format!("{} FOR UPDATE", rows::SELECT_TASK_BY_ID))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::not_found(format!("task #{id}")))?;
    rows::task(&row)
}

/// The tasks `sql` (selecting [`rows::TASK_COLUMNS`]) finds; `bind` adds its parameters.
async fn query_tasks<'q>(
    conn: &mut PgConnection,
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> StoreResult<Vec<Task>> {
    query.fetch_all(conn).await?.iter().map(rows::task).collect()
}

/// The work the tasks `ids` offer claim-next now, as long polls need to judge it (see
/// [`work_of`]); tasks that are not claimable are left out.
async fn claimable_work(
    conn: &mut PgConnection,
    ids: &[i64],
    human_kinds: &[String],
    now: Timestamp,
) -> StoreResult<Vec<Work>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<PgRow> = sqlx::query(&format!(
        "SELECT {}, routed_to FROM tasks WHERE id = ANY($1) ORDER BY id",
        rows::TASK_COLUMNS
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut work = Vec::new();
    for row in &found {
        let routed: Option<String> = row.try_get(rows::TASK_COLUMN_COUNT)?;
        let routed = routed.and_then(|r| r.parse().ok());
        work.extend(work_of(&rows::task(row)?, routed, human_kinds, now));
    }
    Ok(work)
}

#[async_trait::async_trait]
impl Registry for Postgres {
    fn bus(&self) -> &EventBus {
        &self.bus
    }

    fn options(&self) -> &StoreOptions {
        &self.options
    }

    async fn health(&self) -> StoreResult<()> {
        let now = Timestamp::now().millis();
        if now - self.healthy_at.load(Ordering::Relaxed) < HEALTH_TTL_MS {
            return Ok(());
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        self.healthy_at.store(now, Ordering::Relaxed);
        Ok(())
    }

    fn backs_up_to_files(&self) -> bool {
        false
    }

    async fn backup_into(&self, _target: &Path) -> StoreResult<()> {
        Err(StoreError::Refused(crate::domain::Refused::Conflict(
            "a PostgreSQL registry is backed up with pg_dump (see the README's Backups)".into(),
        )))
    }

    async fn close(&self) {
        if let Some(follower) = self.follower.get() {
            follower.stop();
        }
        self.pool.close().await;
    }
}
