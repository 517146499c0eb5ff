//! The event bus: where a backend announces what it committed, and where the rest of the
//! server listens — live events for SSE, the dashboard and MCP, and wake-ups: long polls, task
//! by task (see `waiters.rs`), the loops woken by work (work or capacity may have appeared), the
//! notify loop (something may need telling) and open streams (a token may have stopped
//! working). A backend publishes only after its commit, in commit order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::domain::Event;

use super::waiters::{Waiters, Waiting, Wants, Work};

/// Events a slow subscriber may fall behind by before it must refill from the event log.
const LIVE_BUFFER: usize = 4096;

/// Announcements of committed changes. Cheap to clone; clones share the channels.
#[derive(Clone)]
pub struct EventBus {
    /// Committed events, for SSE and other live subscribers.
    events: broadcast::Sender<Event>,
    /// Bumped whenever work or capacity may have appeared (wakes the assignment loop).
    work: watch::Sender<u64>,
    /// Long polls waiting for work, woken task by task.
    waiters: Waiters,
    /// Bumped whenever something may need a notification (wakes the notify loop).
    outbox: watch::Sender<u64>,
    /// Bumped whenever a token was replaced or revoked (ends the streams it held open).
    tokens: watch::Sender<u64>,
    /// Claim-next attempts made so far (for tests and diagnostics).
    claim_attempts: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            events: broadcast::channel(LIVE_BUFFER).0,
            work: watch::channel(0).0,
            outbox: watch::channel(0).0,
            tokens: watch::channel(0).0,
            waiters: Waiters::default(),
            claim_attempts: Arc::default(),
        }
    }
}

fn bump(signal: &watch::Sender<u64>) {
    signal.send_modify(|n| *n = n.wrapping_add(1));
}

impl EventBus {
    /// Announces committed events, in commit order; `work` (tasks claim-next may now hand out)
    /// wakes one fitting long poll each, and `loops` (tasks became available, or spawn capacity
    /// was freed) wakes the loops woken by work.
    pub fn publish(&self, events: Vec<Event>, work: Vec<Work>, loops: bool) {
        if events.iter().any(|e| e.change.concerns_people()) {
            bump(&self.outbox);
        }
        for event in events {
            // No subscribers is fine: the events are in the log.
            let _ = self.events.send(event);
        }
        if loops || !work.is_empty() {
            bump(&self.work);
        }
        self.waiters.announce(work);
    }

    /// Subscribes to events committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// How many live subscribers the event channel has (event streams, MCP sessions).
    pub fn event_subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Subscribes to "work or capacity may have appeared" signals (the loops woken by work).
    pub fn watch_work(&self) -> watch::Receiver<u64> {
        self.work.subscribe()
    }

    /// A long poll's place in line for work it `wants` (see `waiters.rs`).
    pub fn waiter(&self, wants: Wants) -> Waiting {
        self.waiters.waiter(wants)
    }

    /// How many long polls are waiting for work at this moment.
    pub fn work_waiters(&self) -> usize {
        self.waiters.armed()
    }

    /// Counts a claim-next attempt.
    pub fn claim_attempted(&self) {
        self.claim_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Claim-next attempts made so far.
    pub fn claim_next_attempts(&self) -> u64 {
        self.claim_attempts.load(Ordering::Relaxed)
    }

    /// Subscribes to "a notification may be due" signals.
    pub fn watch_outbox(&self) -> watch::Receiver<u64> {
        self.outbox.subscribe()
    }

    /// Wakes the notify loop.
    pub fn wake_outbox(&self) {
        bump(&self.outbox);
    }

    /// Subscribes to "a token may have stopped working" signals.
    pub fn watch_tokens(&self) -> watch::Receiver<u64> {
        self.tokens.subscribe()
    }

    /// Tells token holders to look again: a token was replaced or revoked.
    pub fn tokens_changed(&self) {
        bump(&self.tokens);
    }
}
