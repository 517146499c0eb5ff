//! Who owns each MCP session, and how many may be open. A session belongs to the principal whose
//! token initialized it; the gate refuses its requests from any other token, and refuses an
//! `initialize` past the limits (`server.mcp_max_sessions_per_agent` for one principal,
//! `server.mcp_max_sessions` in all). [`Tracked`] wraps rmcp's session manager so that a session's
//! slot is freed whenever rmcp ends the session: on DELETE, when it idles out, when its handshake
//! fails, and at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::{
    EventStore, ServerSseMessage, SessionId, SessionManager,
};

use crate::domain::Principal;

/// The limits on open sessions.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Over all principals.
    pub total: usize,
    /// For one principal.
    pub per_owner: usize,
}

/// The principal a session belongs to: the agent (or the admin) behind the token that opened it,
/// and the task a run's token is scoped to, so a run's token and its agent's differ.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    agent_id: Option<i64>,
    name: String,
    scope: Option<i64>,
}

impl Owner {
    /// The owner `who` would be.
    pub fn of(who: &Principal) -> Self {
        Self {
            agent_id: who.agent_id,
            name: who.name.clone(),
            scope: who.scope,
        }
    }
}

/// Why a session cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// The principal has its limit of sessions open.
    #[error(
        "{name} already has {limit} open MCP sessions, the most one token may have; end one \
         (DELETE /mcp with its Mcp-Session-Id) or let an idle one time out"
    )]
    Owner {
        /// The principal's name.
        name: String,
        /// The limit.
        limit: usize,
    },
    /// The server has its limit of sessions open.
    #[error("the server already has {limit} open MCP sessions, the most it allows; try again later")]
    Server {
        /// The limit.
        limit: usize,
    },
}

/// The open sessions, and the slots reserved for sessions being opened.
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Session id → owner, from the handshake until the session ends.
    sessions: HashMap<SessionId, Owner>,
    /// Sessions and reserved slots per owner.
    taken: HashMap<Owner, usize>,
    /// Sessions and reserved slots in all.
    total: usize,
}

impl Registry {
    /// An empty registry enforcing `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves a slot for a new session of `owner`, or says which limit is reached.
    pub fn admit(self: &Arc<Self>, owner: Owner) -> Result<Admission, Full> {
        let mut state = self.state();
        if state.total >= self.limits.total {
            return Err(Full::Server {
                limit: self.limits.total,
            });
        }
        let taken = state.taken.entry(owner.clone()).or_default();
        if *taken >= self.limits.per_owner {
            return Err(Full::Owner {
                name: owner.name,
                limit: self.limits.per_owner,
            });
        }
        *taken += 1;
        state.total += 1;
        Ok(Admission(Arc::new(Mutex::new(Some(Slot {
            registry: self.clone(),
            owner: Some(owner),
        })))))
    }

    /// The owner of session `id`, while it is open.
    pub fn owner(&self, id: &str) -> Option<Owner> {
        self.state().sessions.get(id).cloned()
    }

    /// How many sessions are open or being opened.
    #[cfg(test)]
    fn taken(&self) -> usize {
        self.state().total
    }

    /// Gives session `id` the slot reserved for it.
    fn open(&self, id: SessionId, mut slot: Slot) {
        if let Some(owner) = slot.owner.take() {
            self.state().sessions.insert(id, owner);
        }
    }

    /// Frees the slot of session `id`; a session already ended is left alone.
    fn end(&self, id: &SessionId) {
        let mut state = self.state();
        if let Some(owner) = state.sessions.remove(id) {
            state.free(&owner);
        }
    }
}

impl State {
    fn free(&mut self, owner: &Owner) {
        if let Some(taken) = self.taken.get_mut(owner) {
            *taken -= 1;
            if *taken == 0 {
                self.taken.remove(owner);
            }
        }
        self.total = self.total.saturating_sub(1);
    }
}

/// A slot reserved for a session being opened. It rides in the `initialize` request's extensions
/// to [`Tracked::initialize_session`], which gives it to the new session; a request that never
/// gets there drops it, and the slot is freed.
#[derive(Debug, Clone)]
pub struct Admission(Arc<Mutex<Option<Slot>>>);

impl Admission {
    fn take(&self) -> Option<Slot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[derive(Debug)]
struct Slot {
    registry: Arc<Registry>,
    /// `None` once a session has it.
    owner: Option<Owner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            self.registry.state().free(&owner);
        }
    }
}

/// The slot the gate reserved for the session an `initialize` message opens.
fn admission(message: &ClientJsonRpcMessage) -> Option<Slot> {
    let ClientJsonRpcMessage::Request(request) = message else {
        return None;
    };
    let parts = request.request.extensions().get::<axum::http::request::Parts>()?;
    parts.extensions.get::<Admission>()?.take()
}

/// rmcp's session manager `M`, keeping the [`Registry`] in step with the sessions it runs.
pub struct Tracked<M> {
    inner: M,
    registry: Arc<Registry>,
}

impl<M> Tracked<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, registry: Arc<Registry>) -> Self {
        Self { inner, registry }
    }
}

/// An error of a [`Tracked`] session manager.
#[derive(Debug, thiserror::Error)]
pub enum TrackedError<E> {
    /// From the wrapped manager.
    #[error(transparent)]
    Inner(E),
    /// An `initialize` reached the session manager without passing the gate.
    #[error("an MCP session was initialized without a slot reserved for it")]
    NotAdmitted,
}

impl<M: SessionManager> SessionManager for Tracked<M> {
    type Error = TrackedError<M::Error>;
    type Transport = M::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await.map_err(TrackedError::Inner)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        // Without its handshake the new session cannot be used; rmcp ends it after its
        // initialize timeout.
        let slot = admission(&message).ok_or(TrackedError::NotAdmitted)?;
        // Owned before the client can learn the session's id from the answer.
        self.registry.open(id.clone(), slot);
        let answer = self.inner.initialize_session(id, message).await;
        if answer.is_err() {
            self.registry.end(id);
        }
        answer.map_err(TrackedError::Inner)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await.map_err(TrackedError::Inner)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let closed = self.inner.close_session(id).await;
        self.registry.end(id);
        closed.map_err(TrackedError::Inner)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner
            .create_stream(id, message)
            .await
            .map_err(TrackedError::Inner)
    }

    async fn accept_message(&self, id: &SessionId, message: ClientJsonRpcMessage) -> Result<(), Self::Error> {
        self.inner
            .accept_message(id, message)
            .await
            .map_err(TrackedError::Inner)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner
            .create_standalone_stream(id)
            .await
            .map_err(TrackedError::Inner)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner
            .resume(id, last_event_id)
            .await
            .map_err(TrackedError::Inner)
    }

    // `restore_session` keeps its default (not supported): a session restored from an external
    // store would have no owner. None is configured.

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> Owner {
        Owner {
            agent_id: Some(name.len() as i64),
            name: name.into(),
            scope: None,
        }
    }

    fn id(s: &str) -> SessionId {
        s.into()
    }

    fn open(registry: &Arc<Registry>, who: &str, session: &str) -> Result<(), Full> {
        let admission = registry.admit(owner(who))?;
        registry.open(id(session), admission.take().unwrap());
        Ok(())
    }

    #[test]
    fn limits_sessions_per_owner_and_in_all() {
        let registry = Registry::new(Limits {
            total: 3,
            per_owner: 2,
        });
        open(&registry, "a", "s1").unwrap();
        open(&registry, "a", "s2").unwrap();
        assert!(matches!(
            open(&registry, "a", "s3"),
            Err(Full::Owner { limit: 2, .. })
        ));
        open(&registry, "bo", "s4").unwrap();
        assert_eq!(open(&registry, "bo", "s5"), Err(Full::Server { limit: 3 }));
        assert_eq!(registry.owner("s1"), Some(owner("a")));
        registry.end(&id("s1"));
        registry.end(&id("s1"));
        assert_eq!(registry.taken(), 2, "ending twice frees one slot");
        assert_eq!(registry.owner("s1"), None);
        open(&registry, "bo", "s5").unwrap();
    }

    #[test]
    fn a_reserved_slot_that_opens_nothing_is_freed() {
        let registry = Registry::new(Limits {
            total: 1,
            per_owner: 1,
        });
        let admission = registry.admit(owner("a")).unwrap();
        let copy = admission.clone();
        assert_eq!(registry.taken(), 1);
        drop(admission);
        assert_eq!(registry.taken(), 1, "a copy still rides in the request");
        drop(copy);
        assert_eq!(registry.taken(), 0);
        open(&registry, "a", "s1").unwrap();
    }
}
