//! The work behind every endpoint, whatever protocol asked for it: who may do what
//! ([`access`]), tasks ([`tasks`]), claims and work under a lease ([`claims`]), and the limits on
//! what a token holds open ([`streams`]). `http` and `mcp` are adapters over this layer: they
//! parse their protocol, call a function here, and render its answer.

pub mod access;
pub mod claims;
pub mod handoff;
pub mod reservations;
pub mod streams;
pub mod tasks;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Config;
use crate::domain::TaskRef;
use crate::error::ApiResult;
use crate::loops::Loops;
use crate::notify::Notifier;
use crate::store::Store;

/// The service: everything the work needs, behind one pointer (cheap to clone).
#[derive(Clone)]
pub struct Service(Arc<Parts>);

/// What the service holds.
pub struct Parts {
    /// The task registry.
    pub store: Store,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// SHA-256 of the admin token.
    pub admin_token_hash: [u8; 32],
    /// Becomes `true` when shutdown starts: long polls and event streams end at once.
    pub shutdown: watch::Receiver<bool>,
    /// When each agent's `last_seen` was last written, so it is written at most every few seconds.
    pub seen: Mutex<HashMap<i64, Instant>>,
    /// The scheduled loops.
    pub loops: Arc<Loops>,
    /// Emails to people, and their take and decline links.
    pub notifier: Arc<Notifier>,
    /// Open streams and waiting long polls, within their limits.
    pub streams: Arc<streams::Streams>,
}

impl Deref for Service {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl Service {
    /// A service over these parts.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        admin_token_hash: [u8; 32],
        shutdown: watch::Receiver<bool>,
        loops: Arc<Loops>,
        notifier: Arc<Notifier>,
    ) -> Self {
        let streams = streams::Streams::new(streams::StreamLimits {
            streams: config.server.max_streams,
            streams_per_token: config.server.max_streams_per_token,
            long_polls_per_token: config.server.max_long_polls_per_token,
        });
        Service(Arc::new(Parts {
            store,
            config,
            admin_token_hash,
            shutdown,
            seen: Mutex::new(HashMap::new()),
            loops,
            notifier,
            streams,
        }))
    }

    /// The default lease length.
    pub fn default_lease(&self) -> Duration {
        Duration::from_secs(self.config.server.lease_seconds)
    }

    /// Resolves a task reference (id or key) to a task id.
    pub async fn task_id(&self, raw: &str) -> ApiResult<i64> {
        match TaskRef::parse(raw) {
            TaskRef::Id(id) => Ok(id),
            key => Ok(self.store.task(&key).await?.id),
        }
    }
}
