//! `/nodes`: the servers sharing this registry, with their heartbeats and which one leads.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cluster::SILENT_AFTER;
use crate::domain::Principal;
use crate::error::ApiResult;
use crate::store::Node;

use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(nodes))
}

/// The nodes heard from lately.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// Oldest first.
    pub nodes: Vec<Node>,
    /// The node that answered.
    pub this_node: String,
}

/// The nodes that beat within the last 30 seconds: id, version, last heartbeat, and whether it
/// leads (runs the loops that must run once).
#[utoipa::path(get, path = "/nodes", tag = "dashboard", responses((status = 200, body = NodeList)),
    security(("bearer" = [])))]
pub async fn nodes(State(state): State<AppState>, _who: Principal) -> ApiResult<axum::Json<NodeList>> {
    Ok(axum::Json(NodeList {
        nodes: state.store.nodes(SILENT_AFTER).await?,
        this_node: state.store.options().node.clone(),
    }))
}
