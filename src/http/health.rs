//! `/healthz`: liveness without authentication, naming the node that answered.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::error::ApiResult;

use super::AppState;

/// The routes of this file.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz(State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    state.store.health().await?;
    Ok(axum::Json(
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "node": state.store.options().node}),
    ))
}
