//! The event bus: where a backend announces what it committed, and where the rest of the
//! server listens — live events for SSE, the dashboard and MCP, and wake-ups for long polls
//! (work may have appeared), the notify loop (something may need telling) and open streams (a
//! token may have stopped working). A backend publishes only after its commit, in commit order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::domain::Event;

/// Events a slow subscriber may fall behind by before it must refill from the event log.
const LIVE_BUFFER: usize = 4096;

/// Announcements of committed changes. Cheap to clone; clones share the channels.
#[derive(Clone)]
pub struct EventBus {
    /// Committed events, for SSE and other live subscribers.
    events: broadcast::Sender<Event>,
    /// Bumped whenever claimable work may have appeared (wakes long polls and the assignment loop).
    work: watch::Sender<u64>,
    /// Bumped whenever something may need a notification (wakes the notify loop).
    outbox: watch::Sender<u64>,
    /// Bumped whenever a token was replaced or revoked (ends the streams it held open).
    tokens: watch::Sender<u64>,
    /// How many long polls are waiting for work right now.
    waiters: Arc<AtomicUsize>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            events: broadcast::channel(LIVE_BUFFER).0,
            work: watch::channel(0).0,
            outbox: watch::channel(0).0,
            tokens: watch::channel(0).0,
            waiters: Arc::default(),
        }
    }
}

fn bump(signal: &watch::Sender<u64>) {
    signal.send_modify(|n| *n = n.wrapping_add(1));
}

impl EventBus {
    /// Announces committed events, in commit order; `woke` says work may have appeared.
    pub fn publish(&self, events: Vec<Event>, woke: bool) {
        if events.iter().any(|e| e.change.concerns_people()) {
            bump(&self.outbox);
        }
        for event in events {
            // No subscribers is fine: the events are in the log.
            let _ = self.events.send(event);
        }
        if woke {
            bump(&self.work);
        }
    }

    /// Subscribes to events committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// How many live subscribers the event channel has (event streams, MCP sessions).
    pub fn event_subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Subscribes to "work may have appeared" signals.
    pub fn watch_work(&self) -> watch::Receiver<u64> {
        self.work.subscribe()
    }

    /// Waits until `work` (from [`EventBus::watch_work`]) says work may have appeared,
    /// counted in [`EventBus::work_waiters`] while it waits.
    pub async fn wait_for_work(&self, work: &mut watch::Receiver<u64>) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = work.changed().await;
    }

    /// How many long polls are waiting for work at this moment.
    pub fn work_waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Wakes everything waiting for work.
    pub fn wake_workers(&self) {
        bump(&self.work);
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
