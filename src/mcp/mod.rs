//! MCP over streamable HTTP at `/mcp`, so agents that speak MCP use taskyard natively: the same
//! tasks, leases and bearer tokens as the REST API. `tools` is what a model can call, `calls`
//! runs a call through the REST API's own functions, `server` is the rmcp handler, `watch`
//! tells a session when a lease it holds is gone, `sessions` keeps each session to its owner and
//! within the limits, and `gate` enforces that over HTTP.

mod calls;
mod gate;
mod server;
mod sessions;
mod tools;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::http::{auth, AppState};

use gate::Gate;
use sessions::{Limits, Registry, Tracked};

/// How long a session may go without any message before it is closed (its client then starts a
/// new one). Long enough for an agent that works between calls, short enough to shed clients that
/// vanished without saying goodbye.
const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// The `/mcp` route, behind the same bearer-token check as `/api/v1`: a request without a valid
/// token is refused with 401 before MCP sees it, and then by the session gate.
pub fn router(state: &AppState) -> Router<AppState> {
    let stop = CancellationToken::new();
    // Sessions and their event streams end when shutdown starts, so they never hold it up.
    let mut shutdown = state.shutdown.clone();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
            stop.cancel();
        }
    });
    let mut local = LocalSessionManager::default();
    local.session_config.keep_alive = Some(SESSION_IDLE);
    // No priming event on request streams, so a client cannot resume one: a request whose stream
    // drops before its answer is then certainly unanswerable, and the gate cancels it (a lease
    // claimed for it would otherwise reach nobody).
    local.session_config.sse_retry = None;
    let registry = Registry::new(Limits {
        total: state.config.server.mcp_max_sessions,
        per_owner: state.config.server.mcp_max_sessions_per_agent,
    });
    let sessions = Arc::new(Tracked::new(local, registry.clone()));
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop)
        .with_max_request_body_bytes(state.config.server.max_body_bytes)
        // The Host allow-list guards servers without authentication against DNS rebinding; every
        // request here carries a bearer token such a page cannot have, and the server may be
        // reached under any name it is deployed behind.
        .disable_allowed_hosts();
    let service = state.service.clone();
    let service = StreamableHttpService::new(
        move || Ok(server::Taskyard::new(service.clone())),
        sessions.clone(),
        config,
    );
    let gate = Arc::new(Gate {
        registry,
        sessions,
        state: state.clone(),
    });
    Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(gate, gate::gate))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
}
