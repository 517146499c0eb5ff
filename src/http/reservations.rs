//! Path reservations over REST: reserve paths under a lease, release them, and ask who holds
//! what. The work is [`crate::service::reservations`].

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::input::{ReleasePaths, ReservePaths};
use crate::domain::{Principal, Reservation};
use crate::error::{ApiResult, Problem};
use crate::service::reservations;

use super::extract::{Json, Path, Query};
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(reserve))
        .routes(routes!(unreserve))
        .routes(routes!(list_reservations))
}

/// Reserve paths under your lease on this task. They stay reserved until you release them or
/// the lease ends in any way.
#[utoipa::path(post, path = "/tasks/{id}/reservations", tag = "reservations", request_body = ReservePaths,
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 201, body = Reservation),
              (status = 409, body = Problem, description = "`conflict` (another lease holds an overlapping path: named) or `lease_lost`")),
    security(("bearer" = [])))]
pub async fn reserve(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<ReservePaths>,
) -> ApiResult<(StatusCode, axum::Json<Reservation>)> {
    let made = reservations::reserve(&state, &who, &id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(made)))
}

/// Which lease a release is made under.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FenceQuery {
    /// The fence from the claim.
    fence: i64,
}

/// Release a reservation made under your lease.
#[utoipa::path(delete, path = "/tasks/{id}/reservations/{reservation}", tag = "reservations",
    params(("id" = String, Path, description = "task id or key"),
           ("reservation" = i64, Path, description = "reservation id"), FenceQuery),
    responses((status = 200, body = Reservation), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "`lease_lost`")),
    security(("bearer" = [])))]
pub async fn unreserve(
    State(state): State<AppState>,
    who: Principal,
    Path((id, reservation)): Path<(String, i64)>,
    Query(q): Query<FenceQuery>,
) -> ApiResult<axum::Json<Reservation>> {
    let body = ReleasePaths {
        fence: q.fence,
        reservation,
    };
    Ok(axum::Json(
        reservations::unreserve(&state, &who, &id, body).await?,
    ))
}

/// Which reservations to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReservationQuery {
    /// A path or a pattern: only reservations that overlap it.
    path: Option<String>,
    /// Only this task's (id or key).
    task: Option<String>,
}

/// Live reservations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationList {
    /// Oldest first.
    pub items: Vec<Reservation>,
}

/// Who holds which paths: live reservations, all or those overlapping `path`.
#[utoipa::path(get, path = "/reservations", tag = "reservations", params(ReservationQuery),
    responses((status = 200, body = ReservationList), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_reservations(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ReservationQuery>,
) -> ApiResult<axum::Json<ReservationList>> {
    let items = reservations::list(&state, &who, q.path, q.task).await?;
    Ok(axum::Json(ReservationList { items }))
}
