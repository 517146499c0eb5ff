//! The HTTP surface: the REST API under `/api/v1`, `/healthz`, the dashboard and its login, and
//! the state handlers share. Each resource has its own file with a `router()` whose handlers
//! adapt [`crate::service`]; `/mcp` is mounted by `app.rs` under the same limits.

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
pub mod metrics;
pub mod nodes;
pub mod notifications;
pub mod openapi;
pub mod reservations;
pub mod runs;
pub mod session;
pub mod stats;
pub mod tasks;
pub mod throttle;
pub mod webhooks;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::service::Service;

/// Everything a handler needs: the service, and what only HTTP has (dashboard sessions, rate
/// limits, the throttle on logins and failed authentication). Cheap to clone; dereferences to
/// [`Parts`] and on to the [`Service`].
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

/// What [`AppState`] holds.
pub struct Parts {
    /// The work behind every endpoint.
    pub service: Service,
    /// Dashboard sessions and one-time login codes.
    pub sessions: session::Sessions,
    /// Rate limits on changes, per token.
    pub limiter: limit::RateLimiter,
    /// Logins and failed authentication, per client address.
    pub throttle: throttle::Throttle,
    /// When `/metrics` last read the registry's figures.
    pub metrics_read_at: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl Deref for Parts {
    type Target = Service;

    fn deref(&self) -> &Service {
        &self.service
    }
}

impl AppState {
    /// The HTTP state over `service`, with limits from its configuration.
    pub fn new(service: Service) -> Self {
        let server = &service.config.server;
        let sessions = session::Sessions::new(service.store.clone(), server.max_sessions_per_principal);
        let limiter = limit::RateLimiter::new(server.rate_limit_per_second, server.rate_limit_burst);
        let throttle = throttle::Throttle::new(server);
        AppState(Arc::new(Parts {
            service,
            sessions,
            limiter,
            throttle,
            metrics_read_at: tokio::sync::Mutex::new(None),
        }))
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
}

/// The longest a request may take to produce its response headers (long polls last up to 60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the whole HTTP router: `/api/v1`, `/healthz`, the dashboard, the OpenAPI document,
/// and `mounts` (the MCP endpoint, composed by `app.rs`) under the same limits.
pub fn router(state: AppState, mounts: Router<AppState>) -> Router {
    let api = OpenApiRouter::new()
        .merge(tasks::router())
        .merge(claims::router())
        .merge(reservations::router())
        .merge(agents::router())
        .merge(events::router())
        .merge(loops::router())
        .merge(runs::router())
        .merge(notifications::router())
        .merge(stats::router())
        .merge(nodes::router())
        .merge(webhooks::router())
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
        .merge(metrics::router())
        .merge(links::router())
        .merge(dashboard::router())
        .merge(openapi::router(doc))
        .merge(mounts)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
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
