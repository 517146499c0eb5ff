//! The principals a store remembers by token hash between changes to agents, so that
//! authenticating a request does not cost a query each time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::Principal;

/// Most principals remembered; beyond it the memory starts over.
const PRINCIPALS_KEPT: usize = 10_000;

/// Principals (with liveness status) by token hash. Every committed change to agents forgets
/// them all and moves to a new generation; an answer read during an older generation is not
/// kept, so no stale principal outlives a change. A store whose agents may also change
/// elsewhere (another server on the same database) trusts what it remembers for a while only.
#[derive(Default)]
pub(crate) struct PrincipalCache {
    inner: Mutex<Remembered>,
    /// How long a generation is trusted; none: until agents change here.
    ttl: Option<Duration>,
    /// When the current generation began.
    since: Mutex<Option<Instant>>,
}

/// The generation, and the principals (with liveness status) read during it, by token hash.
type Remembered = (u64, HashMap<String, (Principal, String)>);

impl PrincipalCache {
    /// A cache whose generations end after `ttl` too.
    pub(crate) fn trusted_for(ttl: Duration) -> Self {
        Self {
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        if let Some(ttl) = self.ttl {
            let now = Instant::now();
            let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
            if since.is_none_or(|at| now.duration_since(at) >= ttl) {
                *since = Some(now);
                let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                inner.0 = inner.0.wrapping_add(1);
                inner.1.clear();
                return inner;
            }
        }
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.lock().0
    }

    pub(crate) fn get(&self, token_hash: &str) -> Option<(Principal, String)> {
        self.lock().1.get(token_hash).cloned()
    }

    /// Keeps `found`, read during `generation`, unless agents changed since.
    pub(crate) fn put(&self, generation: u64, token_hash: &str, found: (Principal, String)) {
        let mut inner = self.lock();
        if inner.0 != generation {
            return;
        }
        if inner.1.len() >= PRINCIPALS_KEPT {
            inner.1.clear();
        }
        inner.1.insert(token_hash.to_string(), found);
    }

    /// Notes that agent `agent_id` is online again (its next call need not say so again).
    pub(crate) fn mark_online(&self, agent_id: i64) {
        for (principal, status) in self.lock().1.values_mut() {
            if principal.agent_id == Some(agent_id) {
                *status = "online".into();
            }
        }
    }

    /// Forgets everything: agents changed.
    pub(crate) fn forget(&self) {
        let mut inner = self.lock();
        inner.0 = inner.0.wrapping_add(1);
        inner.1.clear();
    }
}
