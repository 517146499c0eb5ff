//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api/v1/openapi.json` without authentication.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;

/// The document's fixed parts; paths are collected from the routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "taskyard", description = "Coordination server for fleets of AI coding agents: \
        a task registry with leases and fencing. Errors are application/problem+json with a stable `code`."),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem)),
    tags((name = "tasks", description = "The task registry"),
         (name = "claims", description = "Claims and work under a lease"),
         (name = "reservations", description = "Paths held under a lease"),
         (name = "agents", description = "Agent identities and tokens"),
         (name = "events", description = "The live event stream"),
         (name = "loops", description = "Scheduled loops and host status"),
         (name = "runs", description = "Spawned agent processes"),
         (name = "notifications", description = "The outbox: emails to people"),
         (name = "webhooks", description = "The webhook outbox: events POSTed to configured receivers"),
         (name = "dashboard", description = "Overview numbers and the queue of work for people"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Serves the document.
pub fn router(doc: Arc<utoipa::openapi::OpenApi>) -> Router<AppState> {
    Router::new().route(
        "/api/v1/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
}
