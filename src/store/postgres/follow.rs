//! Following every node's commits. Each change that appends events or frees work tells the
//! other nodes with `NOTIFY taskyard` — a hint that carries only ids: the node that committed,
//! whether the loops woken by work should look, and the tasks that became claimable — and a
//! follower on every node listens on a connection of its own. It
//!
//! - tails the event log in id order (which is commit order, see `tx.rs`) and publishes what it
//!   reads on this node's bus: every node's SSE streams, dashboards and MCP watchers see every
//!   event, once, in the same order; it is woken by a hint, by a commit on this node, or by a
//!   poll every second, so a lost hint costs latency, never an event;
//! - wakes the long polls waiting on this node for the tasks another node made claimable, and
//!   looks for claimable work itself whenever its listener listens again (hints sent meanwhile
//!   are lost) and, while polls wait, every second.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch, Notify};

use crate::domain::{Change, Timestamp};
use crate::store::{EventLog, StoreResult};

use super::{claimable_work, connect, Postgres};

/// The channel hints go out on.
pub(super) const CHANNEL: &str = "taskyard";
/// How often the follower looks without a hint.
const POLL: Duration = Duration::from_secs(1);
/// Events read from the log at a time.
const TAIL_BATCH: i64 = 1_000;
/// Most task ids one hint lists (PostgreSQL takes payloads under 8,000 bytes); a change that
/// freed more says so and nodes look for themselves.
const MAX_HINT_IDS: usize = 300;
/// Claimable tasks looked at by a poll for missed work.
const SWEEP: i64 = 256;

/// A hint's payload: `<node> <l|-> <ids, comma-separated, or * for "look">`.
pub(super) fn hint(node: &str, loops: bool, ready: &[i64]) -> String {
    let ids = if ready.len() > MAX_HINT_IDS {
        "*".to_string()
    } else {
        ready.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    };
    format!("{node} {} {ids}", if loops { 'l' } else { '-' })
}

/// A hint as received.
#[derive(Debug, PartialEq, Eq)]
struct Hint {
    node: String,
    loops: bool,
    /// The tasks made claimable; `None` when there were too many to list.
    ready: Option<Vec<i64>>,
}

fn parse(payload: &str) -> Option<Hint> {
    let mut parts = payload.splitn(3, ' ');
    let node = parts.next()?.to_string();
    let loops = parts.next()? == "l";
    let ids = parts.next().unwrap_or("");
    let ready = match ids {
        "*" => None,
        "" => Some(Vec::new()),
        ids => Some(ids.split(',').map(str::parse).collect::<Result<_, _>>().ok()?),
    };
    Some(Hint { node, loops, ready })
}

/// The follower's handles, kept by the store.
pub(super) struct Follower {
    /// Wakes it after a commit on this node.
    pub kick: Arc<Notify>,
    /// Tells it (and its listener) to stop.
    stop: watch::Sender<bool>,
}

impl Follower {
    /// Starts following for `store`, from the event log's current end; the listener connects
    /// to the database at `url` on connections of its own.
    pub async fn start(store: &Arc<Postgres>, url: &str) -> StoreResult<Follower> {
        let cursor = store.last_event_id().await?;
        let kick = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let (heard, hearing) = mpsc::unbounded_channel();
        tokio::spawn(listen_on(url.to_string(), heard, stopped.clone()));
        tokio::spawn(follow(
            Arc::downgrade(store),
            hearing,
            cursor,
            kick.clone(),
            stopped,
        ));
        Ok(Follower { kick, stop })
    }

    /// Stops following.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// What the listener heard.
enum Heard {
    /// It is listening (again): hints sent while it was not are lost.
    Listening,
    /// A hint's payload.
    Hint(String),
}

/// Listens for hints on a connection of its own (to the database at `url`) until `stop`,
/// connecting again (each second at most) whenever the connection fails, and says each time it
/// listens again. Each connection comes from a pool of its own, closed with it, so that a
/// connection that listened before is never listened on again.
async fn listen_on(url: String, heard: mpsc::UnboundedSender<Heard>, mut stop: watch::Receiver<bool>) {
    let mut complained = false;
    loop {
        let pool = connect::listener_pool(&url);
        let connected = tokio::select! {
            _ = stop.changed() => return,
            connected = async {
                let pool = pool.map_err(|e| sqlx::Error::Configuration(e.into()))?;
                let mut listener = PgListener::connect_with(&pool).await?;
                // A lost connection is answered at once; this loop connects again, afresh.
                listener.eager_reconnect(false);
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>((pool, listener))
            } => connected,
        };
        let (pool, mut listener) = match connected {
            Ok(connected) => connected,
            Err(err) => {
                if !complained {
                    complained = true;
                    tracing::warn!(error = %err, "cannot listen for other nodes' changes; polling every second");
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
        };
        if complained {
            complained = false;
            tracing::info!("listening for other nodes' changes again");
        }
        if heard.send(Heard::Listening).is_err() {
            return;
        }
        loop {
            let got = tokio::select! {
                _ = stop.changed() => return,
                got = listener.try_recv() => got,
            };
            match got {
                Ok(Some(note)) => {
                    if heard.send(Heard::Hint(note.payload().to_string())).is_err() {
                        return;
                    }
                }
                // The connection is gone: a new one, on a new pool, says when it listens.
                Ok(None) | Err(_) => break,
            }
        }
        drop(listener);
        // A connection that hangs rather than fails is left behind after a while.
        let _ = tokio::time::timeout(Duration::from_secs(5), pool.close()).await;
    }
}

/// What woke the follower.
enum Woken {
    Stop,
    Kick,
    Tick,
    Heard(Heard),
}

async fn follow(
    store: Weak<Postgres>,
    mut hearing: mpsc::UnboundedReceiver<Heard>,
    mut cursor: i64,
    kick: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woken = tokio::select! {
            _ = stop.changed() => Woken::Stop,
            _ = kick.notified() => Woken::Kick,
            _ = tick.tick() => Woken::Tick,
            heard = hearing.recv() => heard.map_or(Woken::Stop, Woken::Heard),
        };
        let Some(store) = store.upgrade() else { return };
        // What to do this round: whether to look for claimable work (and wake the loops too,
        // when hints may have been lost), and the work other nodes' hints named.
        let mut round = Round::default();
        match woken {
            Woken::Stop => return,
            Woken::Kick => {}
            Woken::Tick => round.look = store.bus.work_waiters() > 0,
            Woken::Heard(heard) => round.add(heard, &store.options.node),
        }
        // Everything heard meanwhile is handled in this one round.
        while let Ok(heard) = hearing.try_recv() {
            round.add(heard, &store.options.node);
        }
        store.options.telemetry.node_hints.inc_by(round.hints);
        if let Err(err) = tail(&store, &mut cursor).await {
            tracing::debug!(error = %err, "cannot read the event log; trying again");
        }
        let woke = match round.look {
            true => sweep(&store, round.loops).await,
            false => wake(&store, &round.ready, round.loops).await,
        };
        if let Err(err) = woke {
            tracing::debug!(error = %err, "cannot look for claimable work; trying again");
        }
    }
}

/// What one round of the follower does about what it heard.
#[derive(Default)]
struct Round {
    /// Look for claimable work rather than judging `ready`.
    look: bool,
    /// Wake the loops woken by work.
    loops: bool,
    /// Tasks other nodes made claimable.
    ready: Vec<i64>,
    /// Hints of other nodes taken in.
    hints: u64,
}

impl Round {
    /// Takes in what the listener heard (hints of this node `me` are its own: already acted on).
    fn add(&mut self, heard: Heard, me: &str) {
        match heard {
            // Hints may have been lost while nobody listened.
            Heard::Listening => (self.look, self.loops) = (true, true),
            Heard::Hint(payload) => match parse(&payload) {
                Some(hint) if hint.node == me => {}
                Some(hint) => {
                    self.hints += 1;
                    self.loops |= hint.loops;
                    match hint.ready {
                        Some(ready) => self.ready.extend(ready),
                        None => self.look = true,
                    }
                }
                None => tracing::debug!(%payload, "a hint that says nothing taskyard knows"),
            },
        }
    }
}

/// Publishes the events committed since `cursor`, in id order, and moves it on.
async fn tail(store: &Postgres, cursor: &mut i64) -> StoreResult<()> {
    loop {
        let batch = store.events_after(*cursor, TAIL_BATCH).await?;
        let Some(last) = batch.last() else { return Ok(()) };
        *cursor = last.id;
        let full = batch.len() as i64 == TAIL_BATCH;
        let tokens = batch.iter().any(|e| {
            matches!(
                e.change,
                Change::AgentDeactivated { .. }
                    | Change::AgentTokenRotated { .. }
                    | Change::AgentDeleted { .. }
            )
        });
        if tokens {
            // Whichever node made it, the change ends what the token held open here too.
            store.principals.forget();
            store.bus.tokens_changed();
        }
        store.bus.publish(batch, Vec::new(), false);
        if !full {
            return Ok(());
        }
    }
}

/// Wakes this node's long polls for the tasks `ready` that other nodes' changes made
/// claimable; `loops` wakes the loops woken by work too.
async fn wake(store: &Postgres, ready: &[i64], loops: bool) -> StoreResult<()> {
    if ready.is_empty() {
        if loops {
            store.bus.publish(Vec::new(), Vec::new(), true);
        }
        return Ok(());
    }
    let mut conn = store.conn().await?;
    let now = database_now(&mut conn).await?;
    let work = claimable_work(&mut conn, ready, &store.options.human_kinds, now).await?;
    drop(conn);
    store.bus.publish(Vec::new(), work, loops);
    Ok(())
}

/// Offers this node's long polls the best claimable tasks, in case a hint was missed; `loops`
/// wakes the loops woken by work too.
async fn sweep(store: &Postgres, loops: bool) -> StoreResult<()> {
    let mut conn = store.conn().await?;
    let now = database_now(&mut conn).await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE status = 'available' AND attempts < max_attempts \
         AND not_before <= $1 AND route <> 'spawn' ORDER BY priority, id LIMIT $2",
    )
    .bind(now.millis())
    .bind(SWEEP)
    .fetch_all(&mut *conn)
    .await?;
    let work = claimable_work(&mut conn, &ids, &store.options.human_kinds, now).await?;
    drop(conn);
    store.bus.publish(Vec::new(), work, loops);
    Ok(())
}

/// The database's clock: claimability is judged by it.
async fn database_now(conn: &mut sqlx::PgConnection) -> StoreResult<Timestamp> {
    let now: i64 = sqlx::query_scalar("SELECT taskyard_now_ms()")
        .fetch_one(conn)
        .await?;
    Ok(Timestamp(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip_and_stay_small() {
        let told = hint("node-a", true, &[1, 2, 30]);
        assert_eq!(
            parse(&told),
            Some(Hint {
                node: "node-a".into(),
                loops: true,
                ready: Some(vec![1, 2, 30])
            })
        );
        assert_eq!(
            parse(&hint("b", false, &[])),
            Some(Hint {
                node: "b".into(),
                loops: false,
                ready: Some(vec![])
            })
        );
        let many: Vec<i64> = (i64::MAX - 10_000..i64::MAX).collect();
        let told = hint(&"n".repeat(64), true, &many);
        assert!(told.len() < 8_000, "{}", told.len());
        assert_eq!(parse(&told).and_then(|h| h.ready), None);
        let most: Vec<i64> = (i64::MAX - MAX_HINT_IDS as i64..i64::MAX).collect();
        assert!(hint(&"n".repeat(64), true, &most).len() < 8_000);
        assert_eq!(parse("x - 1,zz"), None);
    }
}
