//! A change on PostgreSQL: one transaction on a pooled connection, at the database's time. What
//! the change announces (events, tasks that became claimable, agents that changed) is gathered
//! while it runs; at commit its events are appended under one transaction-scoped advisory lock,
//! so event ids are handed out in commit order across every connection and every node (a
//! reader's cursor can never pass an event that is yet to commit), with a hint to the other
//! nodes (`follow.rs`) that goes out with the commit. Only once the commit succeeded does this
//! node wake its long polls, and its follower publishes the events from the log.

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres as Pg, Transaction};

use crate::domain::Timestamp;
use crate::store::announce::{self, Announce, Announcements};
use crate::store::StoreResult;

use super::events::insert_events;
use super::follow::{hint, CHANNEL};
use super::{claimable_work, Postgres};

/// The advisory lock key every event-appending transaction takes before its first event.
const EVENT_APPEND_LOCK: i64 = 0x7461_736b_7961_7264; // "taskyard"

/// An open change: its transaction, the database's time when it began, and what it announces.
pub(super) struct Tx {
    tx: Transaction<'static, Pg>,
    /// The database's clock when the transaction began (`now()`), in ms.
    pub now: Timestamp,
    said: Announcements,
    /// How many requests the change does together (see `lifecycle/batch.rs`).
    requests: usize,
}

impl Announce for Tx {
    fn announcements(&mut self) -> &mut Announcements {
        &mut self.said
    }
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
            said: Announcements::default(),
            requests: 1,
        })
    }

    /// The connection inside the transaction, to run statements on.
    pub fn db(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Says the change does `requests` requests together.
    pub fn grouped(&mut self, requests: usize) {
        self.requests = requests;
    }

    /// Appends the events, commits, and announces the change on `store`'s bus.
    pub async fn commit(mut self, store: &Postgres) -> StoreResult<()> {
        let now = self.now;
        let work = claimable_work(&mut self.tx, &self.said.ready, &store.options.human_kinds, now).await?;
        let new = std::mem::take(&mut self.said.events);
        let loops = self.said.wakes_loops();
        let ready: Vec<i64> = work.iter().map(|w| w.id).collect();
        let told = hint(&store.options.node, loops, &ready);
        let appended = !new.is_empty();
        if appended {
            insert_events(&mut self.tx, now, new, EVENT_APPEND_LOCK, &told).await?;
        } else if loops || !ready.is_empty() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&told)
                .execute(&mut *self.tx)
                .await?;
        }
        let started = std::time::Instant::now();
        self.tx.commit().await?;
        let metrics = &store.options.telemetry;
        metrics.writer_commit.observe(started.elapsed().as_secs_f64());
        metrics.writer_batch.observe(self.requests as f64);
        announce::record(metrics, &self.said.counts);
        if self.said.agents_changed {
            store.principals.forget();
        }
        if self.said.tokens_changed {
            store.bus.tokens_changed();
        }
        if appended {
            store.kick_follower();
        }
        store.bus.publish(Vec::new(), work, loops);
        Ok(())
    }
}
