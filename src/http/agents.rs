//! `/agents`: register agents, list them, and (admin) deactivate them, rotate their tokens, or
//! remove those that never acted.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::input::CreateAgent;
use crate::domain::{Agent, Principal, Role};
use crate::error::{ApiResult, Problem};

use crate::service::access::require;
use crate::token::{hash_token, new_token};

use super::extract::{Json, Path, Query};
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(delete_agent))
        .routes(routes!(deactivate_agent))
        .routes(routes!(rotate_agent_token))
}

/// A new agent and its token (shown only this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentCreated {
    /// The agent.
    pub agent: Agent,
    /// Its bearer token. Only a hash is stored: keep it now.
    pub token: String,
}

/// All agents.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentPage {
    /// The agents, by name.
    pub items: Vec<Agent>,
    /// Always null: the list is not paged.
    pub next_cursor: Option<String>,
}

/// Register an agent and create its token (admin).
#[utoipa::path(post, path = "/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, body = AgentCreated), (status = 409, body = Problem, description = "name taken")),
    security(("bearer" = [])))]
pub async fn create_agent(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<CreateAgent>,
) -> ApiResult<impl IntoResponse> {
    require(&who, Role::Admin)?;
    let spec = body.parse()?;
    let token = new_token();
    let agent = state
        .store
        .create_agent(&spec, &hex::encode(hash_token(&token)), &who)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(AgentCreated { agent, token })))
}

/// Which agents to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgentQuery {
    /// Include the agents of spawned runs that are over (default false: `GET /runs` lists runs).
    all: Option<bool>,
}

/// List agents with their liveness (the agents of finished spawned runs only with `all=true`).
#[utoipa::path(get, path = "/agents", tag = "agents", params(AgentQuery),
    responses((status = 200, body = AgentPage), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_agents(
    State(state): State<AppState>,
    _who: Principal,
    Query(query): Query<AgentQuery>,
) -> ApiResult<axum::Json<AgentPage>> {
    Ok(axum::Json(AgentPage {
        items: state.store.list_agents(query.all.unwrap_or(false)).await?,
        next_cursor: None,
    }))
}

/// A deactivated agent and the leases it lost.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentDeactivated {
    /// The agent, now `deactivated`.
    pub agent: Agent,
    /// The tasks whose leases it held, released back to `available`.
    pub released: Vec<i64>,
}

/// Deactivate an agent (admin): its token stops working at once, its open streams end, and the
/// leases it holds are released, each with a `task.released` event.
#[utoipa::path(post, path = "/agents/{id}/deactivate", tag = "agents", params(("id" = i64, Path, description = "agent id")),
    responses((status = 200, body = AgentDeactivated), (status = 404, body = Problem), (status = 409, body = Problem, description = "already deactivated")),
    security(("bearer" = [])))]
pub async fn deactivate_agent(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<AgentDeactivated>> {
    require(&who, Role::Admin)?;
    let (agent, released) = state.store.deactivate_agent(id, &who).await?;
    Ok(axum::Json(AgentDeactivated { agent, released }))
}

/// Give an agent a new token (admin), shown only this once; the old token stops working at once.
#[utoipa::path(post, path = "/agents/{id}/rotate-token", tag = "agents", params(("id" = i64, Path, description = "agent id")),
    responses((status = 200, body = AgentCreated), (status = 404, body = Problem), (status = 409, body = Problem, description = "deactivated")),
    security(("bearer" = [])))]
pub async fn rotate_agent_token(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<AgentCreated>> {
    require(&who, Role::Admin)?;
    let token = new_token();
    let agent = state
        .store
        .replace_agent_token(id, &hex::encode(hash_token(&token)), &who)
        .await?;
    Ok(axum::Json(AgentCreated { agent, token }))
}

/// Remove an agent that never acted (admin); one with a history must be deactivated instead.
#[utoipa::path(delete, path = "/agents/{id}", tag = "agents", params(("id" = i64, Path, description = "agent id")),
    responses((status = 204, description = "removed"), (status = 404, body = Problem), (status = 409, body = Problem, description = "it has acted")),
    security(("bearer" = [])))]
pub async fn delete_agent(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    require(&who, Role::Admin)?;
    state.store.delete_agent(id, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}
