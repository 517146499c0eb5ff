//! The open connections and the limits on them. Each connection is tracked from its accept:
//! how many of its requests are in flight (from the moment its head is complete until its
//! response body is done), when it went idle, and when the head of its next request began to
//! arrive. A sweeper closes a connection that takes longer than `server.header_timeout` to send
//! a request head (counted from its accept for the first request, from the request's first byte
//! after that) or that waits idle longer than `server.idle_timeout`. At the cap
//! (`server.max_connections`) a new connection evicts the oldest one with no request in flight:
//! a connection that never sends a whole head (slowloris) never has one, so it is always the
//! attacker's that go, and `/healthz` still answers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// `head_since` while no request head is arriving.
const NO_HEAD: u64 = u64::MAX;

/// The limits the registry enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Longest wait for a complete request head.
    pub header_timeout: Duration,
    /// Longest idle wait between requests.
    pub idle_timeout: Duration,
}

/// One open connection, as the registry and the connection's own task see it.
#[derive(Debug)]
pub struct Tracked {
    id: u64,
    /// Milliseconds since the registry's epoch, shared by every timestamp here.
    epoch: Instant,
    in_flight: AtomicU32,
    /// When the connection last went idle: its accept, or the end of its last response.
    idle_since: AtomicU64,
    /// When the head of the request now arriving began to arrive ([`NO_HEAD`]: none is).
    head_since: AtomicU64,
    /// Cancelled to close the connection (evicted, or a timeout ran out).
    close: CancellationToken,
}

impl Tracked {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived: while idle, they begin a request head.
    pub fn read_some(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now();
            let _ = self
                .head_since
                .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// A request's head is complete: it is in flight until the guard is dropped (with its
    /// response body, or with the request if the connection ends first).
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NO_HEAD, Ordering::Release);
        InFlight(self.clone())
    }

    /// Completes once the connection is to be closed.
    pub async fn closed(&self) {
        self.close.cancelled().await
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// A request in flight on a connection; see [`Tracked::request_started`].
#[derive(Debug)]
pub struct InFlight(Arc<Tracked>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.now();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(now, Ordering::Release);
        }
    }
}

/// Why the sweeper closes a connection, if it does.
fn overdue(conn: &Tracked, now: u64, limits: &Limits) -> Option<&'static str> {
    if !conn.idle() {
        return None;
    }
    let waited = |since: u64| Duration::from_millis(now.saturating_sub(since));
    match conn.head_since.load(Ordering::Acquire) {
        NO_HEAD if waited(conn.idle_since.load(Ordering::Acquire)) > limits.idle_timeout => {
            Some("idle for longer than server.idle_timeout")
        }
        NO_HEAD => None,
        since if waited(since) > limits.header_timeout => {
            Some("no complete request head within server.header_timeout")
        }
        _ => None,
    }
}

/// The open connections, oldest first.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Tracked>>>,
}

impl Connections {
    /// An empty registry enforcing `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Tracked>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in a connection just accepted. At the cap, the oldest connection with no request
    /// in flight is closed to make room; `None` when every one has a request in flight (the
    /// new connection is then closed instead).
    pub fn admit(&self) -> Option<Arc<Tracked>> {
        let mut open = self.open();
        if open.len() >= self.limits.max_connections && !evict_oldest_idle(&mut open) {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let conn = Arc::new(Tracked {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            epoch: self.epoch,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            // The first request's head is awaited from the accept.
            head_since: AtomicU64::new(now),
            close: CancellationToken::new(),
        });
        open.insert(conn.id, conn.clone());
        Some(conn)
    }

    /// Closes the oldest connection with no request in flight, to free its file descriptor;
    /// false when there is none.
    pub fn evict_one(&self) -> bool {
        evict_oldest_idle(&mut self.open())
    }

    /// Forgets a connection that ended.
    pub fn remove(&self, conn: &Tracked) {
        self.open().remove(&conn.id);
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.open().len()
    }

    /// Closes every connection whose header or idle timeout ran out, every `tick`, forever.
    pub async fn sweep(self: Arc<Self>) {
        let shortest = self.limits.header_timeout.min(self.limits.idle_timeout);
        let tick = (shortest / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = self.epoch.elapsed().as_millis() as u64;
            let mut open = self.open();
            open.retain(|_, conn| match overdue(conn, now, &self.limits) {
                Some(why) => {
                    tracing::debug!(connection = conn.id, why, "closing a connection");
                    conn.close.cancel();
                    false
                }
                None => true,
            });
        }
    }
}

/// Closes and forgets the oldest connection in `open` with no request in flight.
fn evict_oldest_idle(open: &mut BTreeMap<u64, Arc<Tracked>>) -> bool {
    let Some(id) = open.values().find(|c| c.idle()).map(|c| c.id) else {
        return false;
    };
    if let Some(conn) = open.remove(&id) {
        tracing::debug!(connection = id, "closing the oldest idle connection to make room");
        conn.close.cancel();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            max_connections: max,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let conns = Connections::new(limits(3));
        let a = conns.admit().unwrap();
        let b = conns.admit().unwrap();
        let c = conns.admit().unwrap();
        let busy = a.request_started();
        let d = conns.admit().expect("b is idle and goes");
        assert!(!a.close.is_cancelled() && b.close.is_cancelled() && !c.close.is_cancelled());
        let _busy_c = c.request_started();
        let _busy_d = d.request_started();
        assert!(conns.admit().is_none(), "every connection is busy");
        drop(busy);
        assert!(conns.admit().is_some(), "a is idle again");
        assert!(a.close.is_cancelled());
        assert_eq!(conns.len(), 3);
    }

    #[test]
    fn header_and_idle_timeouts_are_distinct() {
        let l = limits(10);
        let conns = Connections::new(l);
        let conn = conns.admit().unwrap();
        let t0 = conn.now();
        assert_eq!(overdue(&conn, t0 + 9_000, &l), None);
        assert!(overdue(&conn, t0 + 10_001, &l)
            .unwrap()
            .contains("header_timeout"));
        // A request comes, is answered, and the connection waits idle: the idle timeout counts.
        drop(conn.request_started());
        let idle = conn.idle_since.load(Ordering::Acquire);
        assert_eq!(overdue(&conn, idle + 59_000, &l), None);
        assert!(overdue(&conn, idle + 60_001, &l)
            .unwrap()
            .contains("idle_timeout"));
        // The next request's first bytes start the header timeout.
        conn.read_some();
        let head = conn.head_since.load(Ordering::Acquire);
        assert!(overdue(&conn, head + 10_001, &l)
            .unwrap()
            .contains("header_timeout"));
        // While a request is in flight, neither applies.
        let _busy = conn.request_started();
        assert_eq!(overdue(&conn, head + 1_000_000, &l), None);
    }
}
