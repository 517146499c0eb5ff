//! `/notifications`: the outbox — queued, sent and failed emails to people.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{InputError, Notification, NotificationStatus, Principal};
use crate::error::{ApiResult, Problem};
use crate::store::{NotificationFilter, NotificationPage};

use super::extract::{Path, Query};
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(get_notification))
}

/// Filters for listing notifications.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// queued, sent or failed.
    status: Option<String>,
    /// Only about this task.
    task_id: Option<i64>,
    /// Page size, 1..500 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
}

/// List the outbox, newest first.
#[utoipa::path(get, path = "/notifications", tag = "notifications", params(NotificationQuery),
    responses((status = 200, body = NotificationPage), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_notifications(
    State(state): State<AppState>,
    _who: Principal,
    Query(q): Query<NotificationQuery>,
) -> ApiResult<axum::Json<NotificationPage>> {
    let status = q
        .status
        .map(|s| {
            NotificationStatus::parse(&s).ok_or_else(|| {
                InputError::new(
                    "status",
                    format!("unknown status {s:?}; use queued, sent or failed"),
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(InputError::new("limit", "must be between 1 and 500").into());
    }
    let filter = NotificationFilter {
        status,
        task_id: q.task_id,
        limit,
        before_id: q.cursor,
    };
    Ok(axum::Json(state.store.list_notifications(&filter).await?))
}

/// One notification.
#[utoipa::path(get, path = "/notifications/{id}", tag = "notifications",
    params(("id" = i64, Path, description = "notification id")),
    responses((status = 200, body = Notification), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_notification(
    State(state): State<AppState>,
    _who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Notification>> {
    Ok(axum::Json(state.store.notification(id).await?))
}
