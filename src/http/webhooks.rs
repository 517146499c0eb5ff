//! `/webhooks/deliveries`: the webhook outbox — queued, delivered and failed deliveries.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::webhook::{Delivery, DeliveryStatus};
use crate::domain::{InputError, Principal, Role};
use crate::error::{ApiResult, Problem};
use crate::service::access::require;

use super::extract::Query;
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_deliveries))
}

/// Filters for listing deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// queued, delivered or failed.
    status: Option<String>,
    /// How many, 1..500 (default 100).
    limit: Option<i64>,
}

/// Webhook deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// The deliveries.
    pub items: Vec<Delivery>,
    /// Always null: the newest `limit` are listed.
    pub next_cursor: Option<String>,
}

/// List webhook deliveries, newest first: what was sent where, how many attempts, the last answer
/// (admin: a webhook's URL can be its credential, as Slack's are).
#[utoipa::path(get, path = "/webhooks/deliveries", tag = "webhooks", params(DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<axum::Json<DeliveryPage>> {
    require(&who, Role::Admin)?;
    let status = q
        .status
        .map(|s| {
            s.parse::<DeliveryStatus>().map_err(|_| {
                InputError::new(
                    "status",
                    format!("unknown status {s:?}; use queued, delivered or failed"),
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(InputError::new("limit", "must be between 1 and 500").into());
    }
    Ok(axum::Json(DeliveryPage {
        items: state.store.list_webhook_deliveries(status, limit).await?,
        next_cursor: None,
    }))
}
