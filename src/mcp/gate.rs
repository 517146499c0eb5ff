//! The HTTP gate in front of rmcp, after the bearer-token check. It keeps every session to the
//! principal that opened it (a request naming another principal's session is refused with 403)
//! and reserves a slot for each `initialize` within the session limits (429 past them).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::common::http_header::HEADER_SESSION_ID;
use serde::Deserialize;

use crate::domain::Principal;
use crate::error::ApiError;

use super::sessions::{Owner, Registry};

/// What the gate needs.
pub struct Gate {
    /// Who owns which session, and the limits.
    pub registry: Arc<Registry>,
}

/// The gate middleware; see the module documentation.
pub async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    match admit(&gate, request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// The JSON-RPC field the gate looks at.
#[derive(Debug, Deserialize)]
struct Peek {
    method: Option<String>,
}

/// Checks `request` and returns it, carrying a reserved slot if it opens a session.
async fn admit(gate: &Arc<Gate>, request: Request) -> Result<Request, ApiError> {
    let who = request.extensions().get::<Principal>().ok_or_else(|| {
        ApiError::Unauthorized("this MCP request carries no authenticated principal".into())
    })?;
    let owner = Owner::of(who);
    if let Some(session) = request.headers().get(HEADER_SESSION_ID) {
        let session = session
            .to_str()
            .map_err(|_| ApiError::BadRequest("the Mcp-Session-Id header is not text".into()))?;
        return match gate.registry.owner(session) {
            Some(holder) if holder == owner => Ok(request),
            Some(_) => Err(ApiError::Forbidden(
                "this MCP session was opened with another token; a session serves only the token \
                 that initialized it"
                    .into(),
            )),
            None => Err(ApiError::NotFound(
                "no such MCP session (it ended, or never existed); initialize a new one".into(),
            )),
        };
    }
    if request.method() != Method::POST {
        return Ok(request);
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
    if peek.and_then(|p| p.method).as_deref() == Some("initialize") {
        let admission = gate
            .registry
            .admit(owner)
            .map_err(|full| ApiError::RateLimited(full.to_string()))?;
        request.extensions_mut().insert(admission);
    }
    Ok(request)
}
