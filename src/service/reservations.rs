//! Path reservations: made and released by a lease's holder, looked up by anyone who may read,
//! with their role, scope and input checks.

use crate::domain::input::{ReleasePaths, ReservePaths};
use crate::domain::{paths, Principal, Reservation, Role};
use crate::error::ApiResult;

use super::access::{acting_on, require};
use super::Service;

/// Reserves paths under the lease `who` holds on task `id` (id or key).
pub async fn reserve(
    service: &Service,
    who: &Principal,
    id: &str,
    body: ReservePaths,
) -> ApiResult<Reservation> {
    require(who, Role::Agent)?;
    let spec = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service
        .store
        .reserve(id, who, spec.fence, spec.paths, spec.exclusive)
        .await?)
}

/// Releases a reservation of task `id` held under the caller's lease.
pub async fn unreserve(
    service: &Service,
    who: &Principal,
    id: &str,
    body: ReleasePaths,
) -> ApiResult<Reservation> {
    require(who, Role::Agent)?;
    let (reservation, fence) = body.parse()?;
    let id = acting_on(service, who, id).await?;
    Ok(service.store.unreserve(id, reservation, who, fence).await?)
}

/// Live reservations overlapping `path` (a path or a pattern), of task `task` (id or key), or all.
pub async fn list(
    service: &Service,
    who: &Principal,
    path: Option<String>,
    task: Option<String>,
) -> ApiResult<Vec<Reservation>> {
    require(who, Role::Viewer)?;
    let path = path.map(|p| paths::pattern("path", &p)).transpose()?;
    let task = match task {
        Some(t) => Some(service.task_id(&t).await?),
        None => None,
    };
    Ok(service.store.reservations(path, task).await?)
}
