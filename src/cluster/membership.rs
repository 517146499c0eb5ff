//! A node's membership: it registers at boot (refusing to start when another running server
//! uses its id), beats every second, and tries for the leader lease each beat (renewing it
//! while it holds it). The lease is judged by the registry's clock; this node trusts its own
//! leadership only until a margin before the lease could have run out, counted from when it
//! *asked* to renew, on a clock of its own that counts suspended time, so a leader that cannot
//! renew in time (a stalled database, a partition, a suspended host) stops leading before
//! another node could take over. At a graceful stop it gives the lease up and leaves.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

/// How often a node beats and tries for the lease.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long a leader lease lasts from its last renewal.
pub const LEADER_TTL: Duration = Duration::from_secs(10);
/// How long before its lease could run out a leader stops trusting it.
const MARGIN: Duration = Duration::from_secs(3);
/// A node not heard from for this long is gone: no longer listed, its runs settled.
pub const SILENT_AFTER: Duration = Duration::from_secs(30);
/// A record of this node's id beaten within this long may belong to another running server.
const IN_USE: Duration = Duration::from_secs(3);

/// Time since the host booted, counting time it was suspended (`CLOCK_BOOTTIME`): a host that
/// sleeps through its lease wakes knowing that it ran out. (The monotonic clock stops meanwhile.)
fn since_boot() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(t) => Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().clamp(0, 999_999_999) as u32),
        // Not on this system: the monotonic clock.
        Err(_) => {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            START.get_or_init(std::time::Instant::now).elapsed()
        }
    }
}

/// Leadership as this node holds it.
#[derive(Debug, Clone, Copy)]
struct Leading {
    term: i64,
    /// When this node stops trusting it, on [`since_boot`]'s clock.
    until: Duration,
}

/// This node's place among the nodes.
pub struct Membership {
    node: String,
    /// Random per process: tells this server's record from another's with the same id.
    instance: String,
    store: Store,
    leading: Mutex<Option<Leading>>,
    /// The term last said to be led (to log when leadership begins and ends).
    said: Mutex<Option<i64>>,
}

impl Membership {
    /// The membership of `node` in `store`'s registry; nothing is recorded until [`Self::join`].
    pub fn new(store: Store, node: String) -> Arc<Membership> {
        Arc::new(Membership {
            node,
            instance: hex::encode(rand::random::<[u8; 16]>()),
            store,
            leading: Mutex::new(None),
            said: Mutex::new(None),
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
        leading.filter(|l| l.until > since_boot()).map(|l| l.term)
    }

    /// Registers this node and tries once for the lease (at boot, before the loops start).
    /// A record of its id that another process beat just now is waited out (a server that
    /// was killed and restarts at once finds its old record fresh); one that keeps beating
    /// belongs to another running server, and this one refuses to start.
    pub async fn join(&self) -> anyhow::Result<()> {
        let version = env!("CARGO_PKG_VERSION");
        let register = || self.store.register(&self.node, &self.instance, version, IN_USE);
        if let Some(first) = register().await? {
            tokio::time::sleep(IN_USE + BEAT).await;
            if let Some(beat) = register().await? {
                anyhow::ensure!(
                    beat == first,
                    "the node id {:?} is in use by another running server (its heartbeats go on); \
                     give each node its own server.node_id, or its own data folder",
                    self.node
                );
                // Its beats stopped but are still recent by the registry's clock: take it.
                self.store
                    .register(&self.node, &self.instance, version, Duration::ZERO)
                    .await?;
            }
        }
        self.try_lead().await;
        Ok(())
    }

    /// Beats and tries for the lease every [`BEAT`] until `leave` turns true, then gives the
    /// lease up and leaves.
    pub async fn run(self: Arc<Self>, mut leave: watch::Receiver<bool>) {
        let mut beat = tokio::time::interval(BEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = beat.tick() => {}
                _ = leave.changed() => break,
            }
            let beat = match self.store.heartbeat(&self.node, &self.instance).await {
                // The record is gone (or another process took it): registered again unless
                // another server with this id lives.
                Ok(false) => self
                    .store
                    .register(&self.node, &self.instance, env!("CARGO_PKG_VERSION"), IN_USE)
                    .await
                    .map(|taken| taken.is_none()),
                beat => beat,
            };
            match &beat {
                Ok(true) if failing => {
                    failing = false;
                    tracing::info!(node = %self.node, "heartbeats are recorded again");
                }
                Ok(true) => {}
                Ok(false) if !failing => {
                    failing = true;
                    tracing::error!(
                        node = %self.node,
                        "another running server uses this node's id; this one stops leading: \
                         give each node its own server.node_id"
                    );
                }
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(node = %self.node, error = %err, "cannot record this node's heartbeat");
                }
                Ok(false) | Err(_) => {}
            }
            match beat {
                Ok(false) => self.set(None),
                _ => self.try_lead().await,
            }
        }
        // Stopping: the lease is given up (no loop of this node runs any more).
        *self.leading.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.store.options().telemetry.leader.set(0);
        if let Err(err) = self.store.resign(&self.node).await {
            tracing::warn!(error = %err, "cannot give up the leader lease; another node takes it when it runs out");
        }
        if let Err(err) = self.store.leave(&self.node, &self.instance).await {
            tracing::debug!(error = %err, "cannot remove this node's record");
        }
    }

    /// Takes or renews the lease, or learns that another node holds it. A renewal that fails
    /// or takes too long changes nothing: the lease is trusted until its time runs out.
    async fn try_lead(&self) {
        let asked = since_boot();
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
        self.store
            .options()
            .telemetry
            .leader
            .set(i64::from(term.is_some()));
        let before = std::mem::replace(
            &mut *self.said.lock().unwrap_or_else(PoisonError::into_inner),
            term,
        );
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
