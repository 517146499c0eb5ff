//! Who may do what: a token's SHA-256 resolved to its principal (the admin token compared in
//! constant time, agent tokens by a lookup of the hash), role checks, and the scope of a spawned
//! run's token.

use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::domain::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::StoreResult;

use super::Service;

/// How often at most an agent's `last_seen` is written.
const SEEN_EVERY: Duration = Duration::from_secs(5);

fn is_admin(service: &Service, hash: &[u8; 32]) -> bool {
    bool::from(hash.ct_eq(&service.admin_token_hash))
}

/// True while a token's SHA-256 still belongs to someone (without noting that it was seen).
pub async fn token_valid(service: &Service, hash: &[u8; 32]) -> StoreResult<bool> {
    if is_admin(service, hash) {
        return Ok(true);
    }
    Ok(service
        .store
        .principal_by_token_hash(&hex::encode(hash))
        .await?
        .is_some())
}

/// Resolves a token's SHA-256 to the principal it belongs to (and notes that it was seen).
pub async fn principal_for_hash(service: &Service, hash: &[u8; 32]) -> ApiResult<Principal> {
    if is_admin(service, hash) {
        return Ok(Principal::admin());
    }
    let (principal, status) = service
        .store
        .principal_by_token_hash(&hex::encode(hash))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))?;
    if let Some(id) = principal.agent_id {
        let due = {
            let mut seen = service.seen.lock().unwrap_or_else(|p| p.into_inner());
            let due = status == "offline" || seen.get(&id).is_none_or(|at| at.elapsed() >= SEEN_EVERY);
            if due {
                seen.insert(id, Instant::now());
            }
            due
        };
        if due {
            // Bookkeeping: a caller is not refused because its visit could not be written down
            // (on a full disk, say); the next call a few seconds on tries again.
            if let Err(err) = service.store.touch_agent(id).await {
                tracing::warn!(agent = %principal.name, error = %err, "cannot record that an agent was seen");
            }
        }
    }
    Ok(principal)
}

/// Refuses principals below `role`.
pub fn require(principal: &Principal, role: Role) -> ApiResult<()> {
    if principal.role >= role {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{} has the {} role; this needs {}",
            principal.name, principal.role, role
        )))
    }
}

/// Refuses a spawned run's token outside its own task and that task's subtasks.
pub async fn check_scope(service: &Service, who: &Principal, task_id: i64) -> ApiResult<()> {
    match who.scope {
        Some(scope) if !service.store.within_scope(scope, task_id).await? => Err(ApiError::Forbidden(
            format!("this token may act only on task #{scope} and its subtasks"),
        )),
        _ => Ok(()),
    }
}

/// Refuses a spawned run's token creating a task that is not a subtask within its scope.
pub async fn check_new_task_scope(
    service: &Service,
    who: &Principal,
    parent_id: Option<i64>,
) -> ApiResult<()> {
    match (who.scope, parent_id) {
        (None, _) => Ok(()),
        (Some(scope), None) => Err(ApiError::Forbidden(format!(
            "this token may only create subtasks of task #{scope} (set parent_id)"
        ))),
        (Some(_), Some(parent)) => check_scope(service, who, parent).await,
    }
}

/// Resolves the task an agent acts on (id or key) and refuses a run token outside its scope.
pub async fn acting_on(service: &Service, who: &Principal, id: &str) -> ApiResult<i64> {
    let id = service.task_id(id).await?;
    check_scope(service, who, id).await?;
    Ok(id)
}
