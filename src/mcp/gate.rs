//! The HTTP gate in front of rmcp, after the bearer-token check. It keeps every session to the
//! principal that opened it (a request naming another principal's session is refused with 403),
//! reserves a slot for each `initialize` within the session limits (429 past them), cancels
//! a request whose answer can no longer be delivered, and ends a session's stream of server
//! messages (the `GET`) once the token that opened it is revoked.
//!
//! That last part matters for long calls, a waiting `claim_next` above all: in rmcp a request
//! keeps running when the client drops its POST stream, and a lease claimed then would reach
//! nobody. Request streams are not resumable here (no priming event, see `mod.rs`), so a stream
//! dropped before its end means the answer is lost; the gate then tells the session the request
//! is cancelled, exactly as the client's own `notifications/cancelled` would.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::common::http_header::HEADER_SESSION_ID;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{SessionId, SessionManager};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::Principal;
use crate::error::ApiError;
use crate::http::credential::Credential;
use crate::http::AppState;

use super::sessions::{Owner, Registry, Tracked};

/// The session manager behind `/mcp`.
pub type Sessions = Tracked<LocalSessionManager>;

/// What the gate needs.
pub struct Gate {
    /// Who owns which session, and the limits.
    pub registry: Arc<Registry>,
    /// The sessions, to cancel requests in them.
    pub sessions: Arc<Sessions>,
    /// The server's state, to learn when a stream's token is revoked.
    pub state: AppState,
}

/// The gate middleware; see the module documentation.
pub async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    match admit(&gate, request).await {
        Ok((request, Some(call))) => {
            let response = next.run(request).await;
            cancel_if_dropped(response, gate.sessions.clone(), call)
        }
        Ok((request, None)) => {
            let credential = (request.method() == Method::GET)
                .then(|| request.extensions().get::<Credential>().cloned())
                .flatten();
            // A GET opens the session's stream of server messages: it counts as a stream.
            let slot = match (&credential, request.extensions().get::<Principal>()) {
                (Some(_), Some(who)) => match gate.state.streams.open_stream(&who.name) {
                    Ok(slot) => Some(slot),
                    Err(refused) => return refused.into_response(),
                },
                _ => None,
            };
            let response = next.run(request).await;
            match (credential, slot) {
                (Some(credential), Some(slot)) if response.status().is_success() => response.map(|body| {
                    let messages = credential.limit(gate.state.clone(), body.into_data_stream());
                    Body::from_stream(slot.hold(messages))
                }),
                _ => response,
            }
        }
        Err(refused) => refused.into_response(),
    }
}

/// The JSON-RPC fields the gate looks at.
#[derive(Debug, Deserialize)]
struct Peek {
    id: Option<Value>,
    method: Option<String>,
}

/// A request in a session: the session and the request's JSON-RPC id.
struct Call {
    session: SessionId,
    id: Value,
}

/// Checks `request` and returns it, with the call to cancel should its answer be lost.
async fn admit(gate: &Arc<Gate>, request: Request) -> Result<(Request, Option<Call>), ApiError> {
    let who = request.extensions().get::<Principal>().ok_or_else(|| {
        ApiError::Unauthorized("this MCP request carries no authenticated principal".into())
    })?;
    let owner = Owner::of(who);
    let session: Option<SessionId> = match request.headers().get(HEADER_SESSION_ID) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::BadRequest("the Mcp-Session-Id header is not text".into()))?
                .into(),
        ),
        None => None,
    };
    if let Some(session) = &session {
        match gate.registry.owner(session) {
            Some(holder) if holder == owner => {}
            Some(_) => {
                return Err(ApiError::Forbidden(
                    "this MCP session was opened with another token; a session serves only the \
                     token that initialized it"
                        .into(),
                ))
            }
            None => {
                return Err(ApiError::NotFound(format!(
                    "no such MCP session on node {} (it ended, never existed, or was opened on \
                     another node: MCP sessions live on the node that opened them, so route an \
                     MCP client to one node); initialize a new one",
                    gate.state.store.options().node
                )))
            }
        }
    }
    if request.method() != Method::POST {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), &())
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the request body is larger than the server allows".into())
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {}", e.body_text()))
            }
        })?;
    // Whatever does not parse here is left for rmcp to refuse.
    let peek = serde_json::from_slice::<Peek>(&bytes).ok();
    let mut request = Request::from_parts(parts, Body::from(bytes));
    match (session, peek) {
        (
            None,
            Some(Peek {
                method: Some(method), ..
            }),
        ) if method == "initialize" => {
            let admission = gate.registry.admit(owner).map_err(|full| ApiError::RateLimited {
                detail: full.to_string(),
                retry_after: 30,
            })?;
            request.extensions_mut().insert(admission);
            Ok((request, None))
        }
        // A request (it has an id and a method) within a session; a client's answer to a server
        // request has an id but no method, and a notification no id.
        (
            Some(session),
            Some(Peek {
                id: Some(id),
                method: Some(_),
            }),
        ) => Ok((request, Some(Call { session, id }))),
        _ => Ok((request, None)),
    }
}

/// Wraps the body of a request's answer stream so that, dropped before its end, it cancels `call`.
fn cancel_if_dropped(response: Response, sessions: Arc<Sessions>, call: Call) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = Answer {
        body: body.into_data_stream(),
        ended: false,
        call: Some((sessions, call)),
    };
    Response::from_parts(parts, Body::from_stream(body))
}

/// The answer stream of one request.
struct Answer {
    body: BodyDataStream,
    ended: bool,
    /// What to cancel if the stream is dropped before it ends.
    call: Option<(Arc<Sessions>, Call)>,
}

impl Stream for Answer {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.body).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.ended = true;
        }
        next
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Some((sessions, Call { session, id })) = self.call.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let cancel = json!({
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": id, "reason": "the client dropped the stream its answer was due on"},
            });
            let Ok(cancel) = serde_json::from_value::<ClientJsonRpcMessage>(cancel) else {
                return;
            };
            // The session may have ended meanwhile, taking the request with it; a request that
            // was answered already ignores the cancellation.
            let _ = sessions.accept_message(&session, cancel).await;
        });
    }
}
