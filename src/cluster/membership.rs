//! A node's membership: it registers at boot, beats every second, and tries for the leader
//! lease each beat (renewing it while it holds it). The lease is judged by the registry's
//! clock; this node trusts its own leadership only until a margin before the lease could have
//! run out, counted from when it *asked* to renew on its own monotonic clock, so a leader that
//! cannot renew in time (a stalled database, a partition) stops leading before another node
//! could take over. At a graceful stop it gives the lease up and leaves.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::{Store, StoreResult};

/// How often a node beats and tries for the lease.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long a leader lease lasts from its last renewal.
pub const LEADER_TTL: Duration = Duration::from_secs(10);
/// How long before its lease could run out a leader stops trusting it.
const MARGIN: Duration = Duration::from_secs(3);
/// A node not heard from for this long is gone: no longer listed, its runs settled.
pub const SILENT_AFTER: Duration = Duration::from_secs(30);

/// Leadership as this node holds it.
#[derive(Debug, Clone, Copy)]
struct Leading {
    term: i64,
    /// When this node stops trusting it (its monotonic clock).
    until: Instant,
}

/// This node's place among the nodes.
pub struct Membership {
    node: String,
    store: Store,
    leading: Mutex<Option<Leading>>,
    /// The term while this node leads, `None` otherwise.
    term: watch::Sender<Option<i64>>,
}

impl Membership {
    /// The membership of `node` in `store`'s registry; nothing is recorded until [`Self::join`].
    pub fn new(store: Store, node: String) -> Arc<Membership> {
        Arc::new(Membership {
            node,
            store,
            leading: Mutex::new(None),
            term: watch::Sender::new(None),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// True while this node leads (and may run the loops that must run once).
    pub fn leads(&self) -> bool {
        self.term().is_some()
    }

    /// The term of the lease this node holds, while it trusts it.
    pub fn term(&self) -> Option<i64> {
        let leading = *self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        leading.filter(|l| l.until > Instant::now()).map(|l| l.term)
    }

    /// Registers this node and tries once for the lease (at boot, before the loops start).
    pub async fn join(&self) -> StoreResult<()> {
        self.store
            .heartbeat(&self.node, env!("CARGO_PKG_VERSION"), true)
            .await?;
        self.try_lead().await;
        Ok(())
    }

    /// Beats and tries for the lease every [`BEAT`] until `shutdown`, then gives the lease up
    /// and leaves.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut beat = tokio::time::interval(BEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = beat.tick() => {}
                _ = shutdown.changed() => break,
            }
            match self
                .store
                .heartbeat(&self.node, env!("CARGO_PKG_VERSION"), false)
                .await
            {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(node = %self.node, "heartbeats are recorded again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(node = %self.node, error = %err, "cannot record this node's heartbeat");
                }
                Err(_) => {}
            }
            self.try_lead().await;
        }
        self.set(None);
        if let Err(err) = self.store.resign(&self.node).await {
            tracing::warn!(error = %err, "cannot give up the leader lease; another node takes it when it runs out");
        }
        if let Err(err) = self.store.leave(&self.node).await {
            tracing::debug!(error = %err, "cannot remove this node's record");
        }
    }

    /// Takes or renews the lease, or learns that another node holds it. A renewal that fails
    /// or takes too long changes nothing: the lease is trusted until its time runs out.
    async fn try_lead(&self) {
        let asked = Instant::now();
        match tokio::time::timeout(LEADER_TTL - MARGIN, self.store.lead(&self.node, LEADER_TTL)).await {
            Ok(Ok(Some(term))) => self.set(Some(Leading {
                term: term.term,
                until: asked + LEADER_TTL - MARGIN,
            })),
            Ok(Ok(None)) => self.set(None),
            Ok(Err(err)) => tracing::debug!(error = %err, "cannot renew or take the leader lease"),
            Err(_) => tracing::debug!("renewing the leader lease took too long"),
        }
        // A lease that ran out while renewals failed is over.
        if self.term().is_none() {
            self.set(None);
        }
    }

    /// Records `leading`, and says when leadership begins or ends.
    fn set(&self, leading: Option<Leading>) {
        *self.leading.lock().unwrap_or_else(PoisonError::into_inner) = leading;
        let term = leading.map(|l| l.term);
        let before = self.term.send_replace(term);
        match (before, term) {
            (None, Some(term)) => {
                tracing::info!(node = %self.node, term, "this node leads: it runs the loops that must run once");
                // Work may have waited for a leader: the loops woken by it look now.
                self.store.bus().publish(Vec::new(), Vec::new(), true);
                self.store.bus().wake_outbox();
            }
            (Some(old), Some(new)) if old != new => {
                tracing::info!(node = %self.node, term = new, "this node leads again under a new term");
            }
            (Some(_), None) => tracing::warn!(node = %self.node, "this node no longer leads"),
            _ => {}
        }
    }
}
