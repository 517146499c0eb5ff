//! `/stats` and `/queue`: the dashboard's overview numbers, and the work waiting on people
//! (with decline, which passes a task's open offer on to the next person).

use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{Principal, Task};
use crate::error::{ApiError, ApiResult, Problem};
use crate::store::Stats;

use super::AppState;

/// Most tasks the queue shows.
const QUEUE_LIMIT: i64 = 500;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats))
        .routes(routes!(queue))
        .routes(routes!(decline))
}

/// Counts by status and priority, agents, live runs, and claims and completions per minute
/// over the last hour.
#[utoipa::path(get, path = "/stats", tag = "dashboard", responses((status = 200, body = Stats)),
    security(("bearer" = [])))]
pub async fn stats(State(state): State<AppState>, _who: Principal) -> ApiResult<axum::Json<Stats>> {
    Ok(axum::Json(state.store.stats().await?))
}

/// A task waiting on people.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    /// The task.
    pub task: Task,
    /// The person it is offered to by email now, if anyone.
    pub offered_to: Option<String>,
}

/// The manual queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    /// Most urgent first.
    pub items: Vec<QueueItem>,
}

/// Work waiting on people: available tasks routed to or meant for people, and blocked tasks.
#[utoipa::path(get, path = "/queue", tag = "dashboard", responses((status = 200, body = Queue)),
    security(("bearer" = [])))]
pub async fn queue(State(state): State<AppState>, _who: Principal) -> ApiResult<axum::Json<Queue>> {
    let items = state
        .store
        .people_queue(QUEUE_LIMIT)
        .await?
        .into_iter()
        .map(|(task, offer)| QueueItem {
            task,
            offered_to: offer.map(|(_, human)| human),
        })
        .collect();
    Ok(axum::Json(Queue { items }))
}

/// What a decline did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Declined {
    /// The person whose offer was declined.
    pub declined_by: String,
    /// The next person it is offered to; none: it waits in the queue.
    pub offered_to: Option<String>,
}

/// Decline a task's open email offer on its person's behalf: it goes to the next matching person,
/// or stays in the queue. Admins and people.
#[utoipa::path(post, path = "/queue/{id}/decline", tag = "dashboard",
    params(("id" = String, Path, description = "task id or key")),
    responses((status = 200, body = Declined), (status = 409, body = Problem, description = "no open offer")),
    security(("bearer" = [])))]
pub async fn decline(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Declined>> {
    if !who.is_person() {
        return Err(ApiError::Forbidden(
            "only admins and people may decline work".into(),
        ));
    }
    let id = state.task_id(&id).await?;
    let offer = state
        .store
        .open_offer(id)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("task #{id} has no open offer to decline")))?;
    let notification = state.store.notification(offer.0).await?;
    if who.kind == "human" && who.name != notification.human {
        return Err(ApiError::Forbidden(format!(
            "the offer of task #{id} is {}'s, not {}'s",
            notification.human, who.name
        )));
    }
    let next = state.notifier.decline(&notification).await?;
    Ok(axum::Json(Declined {
        declined_by: notification.human,
        offered_to: next.map(|p| p.name),
    }))
}
