//! A change on PostgreSQL: one transaction on a pooled connection, at the database's time. What
//! the change announces (events, tasks that became claimable, agents that changed) is gathered
//! while it runs; at commit its events are appended under one transaction-scoped advisory lock,
//! so event ids are handed out in commit order across every connection and every node (a
//! reader's cursor can never pass an event that is yet to commit), and only once the commit
//! succeeded is anything published.

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres as Pg, Transaction};

use crate::domain::event::NewEvent;
use crate::domain::Timestamp;
use crate::store::StoreResult;

use super::events::insert_events;
use super::{claimable_work, Postgres};

/// The advisory lock key every event-appending transaction takes before its first event.
const EVENT_APPEND_LOCK: i64 = 0x7461_736b_7961_7264; // "taskyard"

/// Work counted in the metrics once its change commits, by project.
#[derive(Debug, Clone, Copy)]
pub(super) enum Count {
    Claim,
    Completion,
    Failure,
    LeaseExpiry,
}

/// An open change: its transaction, the database's time when it began, and what it announces.
pub(super) struct Tx {
    tx: Transaction<'static, Pg>,
    /// The database's clock when the transaction began (`now()`), in ms.
    pub now: Timestamp,
    events: Vec<NewEvent>,
    ready: Vec<i64>,
    capacity: bool,
    agents_changed: bool,
    tokens_changed: bool,
    counts: Vec<(Count, String)>,
}

impl Tx {
    /// Begins a transaction on a connection of `pool`.
    pub async fn begin(pool: &PgPool) -> StoreResult<Tx> {
        let mut tx = pool.begin().await?;
        let now: i64 = sqlx::query_scalar("SELECT taskyard_now_ms()")
            .fetch_one(&mut *tx)
            .await?;
        Ok(Tx {
            tx,
            now: Timestamp(now),
            events: Vec::new(),
            ready: Vec::new(),
            capacity: false,
            agents_changed: false,
            tokens_changed: false,
            counts: Vec::new(),
        })
    }

    /// The connection inside the transaction, to run statements on.
    pub fn db(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Records `event` with the change (appended before it commits).
    pub fn event(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// Records `events` with the change.
    pub fn events(&mut self, events: impl IntoIterator<Item = NewEvent>) {
        self.events.extend(events);
    }

    /// Task `id` may have become claimable: a fitting long poll and the assignment loop are
    /// woken once the change commits.
    pub fn ready(&mut self, id: i64) {
        self.ready.push(id);
    }

    /// Spawn capacity was freed (a run ended): the assignment loop looks again.
    pub fn capacity_freed(&mut self) {
        self.capacity = true;
    }

    /// Agents changed (a token, role, capabilities): remembered principals are forgotten.
    pub fn agents_changed(&mut self) {
        self.agents_changed = true;
    }

    /// A token was replaced or revoked: open streams look again whether theirs still works.
    pub fn tokens_changed(&mut self) {
        self.agents_changed = true;
        self.tokens_changed = true;
    }

    /// Counts `what` for `project` in the metrics, once the change commits.
    pub fn count(&mut self, what: Count, project: &str) {
        self.counts.push((what, project.to_string()));
    }

    /// Appends the events, commits, and announces the change on `store`'s bus.
    pub async fn commit(mut self, store: &Postgres) -> StoreResult<()> {
        let now = self.now;
        let work = claimable_work(&mut self.tx, &self.ready, &store.options.human_kinds, now).await?;
        let new = std::mem::take(&mut self.events);
        // Held from the first event's id to the publication of the last: what this node
        // publishes is in id order too.
        let _appending = match new.is_empty() {
            true => None,
            false => Some(store.appending.lock().await),
        };
        let events = if new.is_empty() {
            Vec::new()
        } else {
            insert_events(&mut self.tx, now, new, EVENT_APPEND_LOCK).await?
        };
        let started = std::time::Instant::now();
        self.tx.commit().await?;
        let metrics = &store.options.telemetry;
        metrics.writer_commit.observe(started.elapsed().as_secs_f64());
        metrics.writer_batch.observe(1.0);
        for (what, project) in &self.counts {
            let family = match what {
                Count::Claim => &metrics.claims,
                Count::Completion => &metrics.completions,
                Count::Failure => &metrics.failures,
                Count::LeaseExpiry => &metrics.lease_expiries,
            };
            metrics.count(family, project);
        }
        if self.agents_changed {
            store.principals.forget();
        }
        if self.tokens_changed {
            store.bus.tokens_changed();
        }
        store
            .bus
            .publish(events, work, self.capacity || !self.ready.is_empty());
        Ok(())
    }
}
