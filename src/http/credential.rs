//! What a request authenticated with — a bearer token or a dashboard session — kept by the
//! responses that stay open (the event stream, a followed run log, an MCP session's stream) so
//! they end once it would no longer authenticate: after a logout (on this server or another one
//! sharing the registry), when the session expires, or when the token is revoked. The checks
//! happen when something is announced and every few seconds, never per streamed item.

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use futures::{Stream, StreamExt};

use crate::domain::Timestamp;
use crate::error::ApiError;

use crate::service::access;

use super::AppState;

/// How often an open stream looks again unprompted. Logouts and every token change this server
/// makes are announced, and a session's expiry is awaited exactly; this bounds how long a change
/// made behind the server's back (a logout on another server, an agent's row edited in the
/// database) goes unnoticed.
const RECHECK: Duration = Duration::from_secs(5);

/// The credential a request was authenticated with (put in its extensions by
/// [`super::auth::authenticate`]).
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token, by its SHA-256.
    Token([u8; 32]),
    /// A dashboard session.
    Session {
        /// The session's key (see [`super::session::key`]).
        key: [u8; 32],
        /// SHA-256 of the token the session acts as.
        token_hash: [u8; 32],
        /// When the session ends, on the registry's clock.
        expires: Timestamp,
    },
}

impl Credential {
    /// True while this credential still authenticates. A check that cannot be made counts as
    /// "no": the client reconnects and is checked afresh.
    async fn still_valid(&self, state: &AppState) -> bool {
        let token_hash = match self {
            Credential::Token(hash) => hash,
            Credential::Session { key, token_hash, .. } => match state.sessions.get_by_key(key).await {
                Ok(Some(_)) => token_hash,
                Ok(None) => return false,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot confirm an open stream's session; ending the stream");
                    return false;
                }
            },
        };
        match access::token_valid(state, token_hash).await {
            Ok(valid) => valid,
            Err(err) => {
                tracing::warn!(error = %err, "cannot confirm an open stream's token; ending the stream");
                false
            }
        }
    }

    /// Completes once this credential no longer authenticates.
    pub async fn ended(self, state: AppState) {
        let mut sessions = state.sessions.watch_ended();
        let mut tokens = state.store.bus().watch_tokens();
        loop {
            // Seen before the check, so a change announced during the check wakes the wait below.
            sessions.mark_unchanged();
            tokens.mark_unchanged();
            if !self.still_valid(&state).await {
                return;
            }
            let mut next = Instant::now() + RECHECK;
            if let Credential::Session { expires, .. } = &self {
                // A session the registry still holds past this server's idea of its expiry (the
                // clocks differ a little) is looked at again after RECHECK, not at once.
                let left = expires.millis().saturating_sub(Timestamp::now().millis());
                if let Ok(left @ 1..) = u64::try_from(left) {
                    next = next.min(Instant::now() + Duration::from_millis(left));
                }
            }
            // Both senders live as long as `state`, so neither channel closes while this waits.
            tokio::select! {
                _ = sessions.changed() => {}
                _ = tokens.changed() => {}
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// `stream`, cut off once this credential no longer authenticates.
    pub fn limit<S: Stream>(self, state: AppState, stream: S) -> impl Stream<Item = S::Item> {
        stream.take_until(self.ended(state))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Credential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Credential>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("not authenticated".into()))
    }
}
