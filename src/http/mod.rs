//! The HTTP surface: the REST API under `/api/v1`, `/healthz`, `/mcp` (mounted from [`crate::mcp`]),
//! and the shared state handlers use.
//! Each resource has its own file with a `router()`; none of them writes SQL.

pub mod agents;
pub mod auth;
pub mod claims;
pub mod credential;
pub mod dashboard;
pub mod events;
pub mod extract;
pub mod health;
pub mod limit;
pub mod links;
pub mod loops;
pub mod notifications;
pub mod openapi;
pub mod runs;
pub mod session;
pub mod stats;
pub mod streams;
pub mod tasks;
pub mod throttle;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::Router;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::domain::TaskRef;
use crate::error::{ApiError, ApiResult};
use crate::store::Store;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The task registry.
    pub store: Store,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// SHA-256 of the admin token.
    pub admin_token_hash: Arc<[u8; 32]>,
    /// Becomes `true` when shutdown starts: long polls and event streams end at once.
    pub shutdown: watch::Receiver<bool>,
    /// When each agent's `last_seen` was last written, so it is written at most every few seconds.
    pub seen: Arc<Mutex<HashMap<i64, Instant>>>,
    /// The scheduled loops.
    pub loops: Arc<crate::loops::Loops>,
    /// Emails to people, and their take and decline links.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Dashboard sessions and one-time login codes.
    pub sessions: Arc<session::Sessions>,
    /// Rate limits on changes, per token.
    pub limiter: Arc<limit::RateLimiter>,
    /// Open streams and waiting long polls, within their limits.
    pub streams: Arc<streams::Streams>,
    /// Logins and failed authentication, per client address.
    pub throttle: Arc<throttle::Throttle>,
}

impl AppState {
    /// The default lease length.
    pub fn default_lease(&self) -> Duration {
        Duration::from_secs(self.config.server.lease_seconds)
    }

    /// The origin (`scheme://host[:port]`) of `server.public_url`, if set.
    pub fn public_origin(&self) -> Option<String> {
        let url = self.config.server.public_url.as_deref()?;
        let (scheme, rest) = url.split_once("://")?;
        Some(format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest)))
    }

    /// The host name of `server.public_url`, if set.
    pub fn public_host(&self) -> Option<String> {
        let url = self.config.server.public_url.as_deref()?;
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.strip_prefix('[') {
            Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or("")),
            None => authority.split(':').next().unwrap_or(authority).to_string(),
        };
        Some(host.to_ascii_lowercase())
    }

    /// Resolves a path segment (id or key) to a task id.
    pub async fn task_id(&self, raw: &str) -> ApiResult<i64> {
        match TaskRef::parse(raw) {
            TaskRef::Id(id) => Ok(id),
            key => Ok(self.store.task(&key).await?.id),
        }
    }
}

/// The longest a request may take to produce its response headers (long polls last up to 60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the whole HTTP router: `/api/v1`, `/healthz`, `/mcp` and the OpenAPI document.
pub fn router(state: AppState) -> Router {
    let api = OpenApiRouter::new()
        .merge(tasks::router())
        .merge(claims::router())
        .merge(agents::router())
        .merge(events::router())
        .merge(loops::router())
        .merge(runs::router())
        .merge(notifications::router())
        .merge(stats::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let (api, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api/v1", api)
        .split_for_parts();
    let doc = Arc::new(doc);
    Router::new()
        .merge(api)
        .merge(health::router())
        .merge(links::router())
        .merge(dashboard::router())
        .merge(openapi::router(doc))
        .merge(crate::mcp::router(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
