//! Bearer-token authentication and role checks. Tokens are compared by their SHA-256 hash:
//! the admin token in constant time, agent tokens by a lookup of the hash.

use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::StoreResult;

use super::credential::Credential;
use super::throttle::ClientIp;
use super::{session, AppState};

/// How often at most an agent's `last_seen` is written.
const SEEN_EVERY: Duration = Duration::from_secs(5);

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random bearer token: `ty_` and 64 hex digits (256 bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("ty_{}", hex::encode(bytes))
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn is_admin(state: &AppState, hash: &[u8; 32]) -> bool {
    bool::from(hash.ct_eq(&*state.admin_token_hash))
}

/// True while a token's SHA-256 still belongs to someone (without noting that it was seen).
pub async fn token_valid(state: &AppState, hash: &[u8; 32]) -> StoreResult<bool> {
    if is_admin(state, hash) {
        return Ok(true);
    }
    Ok(state
        .store
        .principal_by_token_hash(&hex::encode(hash))
        .await?
        .is_some())
}

/// Resolves a token's SHA-256 to the principal it belongs to (and notes that it was seen).
pub async fn principal_for_hash(state: &AppState, hash: &[u8; 32]) -> ApiResult<Principal> {
    if is_admin(state, hash) {
        return Ok(Principal::admin());
    }
    let (principal, status) = state
        .store
        .principal_by_token_hash(&hex::encode(hash))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))?;
    if let Some(id) = principal.agent_id {
        let due = {
            let mut seen = state.seen.lock().unwrap_or_else(|p| p.into_inner());
            let due = status == "offline" || seen.get(&id).is_none_or(|at| at.elapsed() >= SEEN_EVERY);
            if due {
                seen.insert(id, Instant::now());
            }
            due
        };
        if due {
            // Bookkeeping: a caller is not refused because its visit could not be written down
            // (on a full disk, say); the next call a few seconds on tries again.
            if let Err(err) = state.store.touch_agent(id).await {
                tracing::warn!(agent = %principal.name, error = %err, "cannot record that an agent was seen");
            }
        }
    }
    Ok(principal)
}

/// Resolves a token presented by a client at `ip`, within the throttle on failed
/// authentication: an address that has used up its failures is refused before the token is
/// looked at (unless it authenticated from there lately), and an unknown token counts as a
/// failure.
pub async fn checked_principal(state: &AppState, ip: ClientIp, hash: &[u8; 32]) -> ApiResult<Principal> {
    let charged = state.throttle.before_check(ip, hash)?;
    let found = principal_for_hash(state, hash).await;
    let valid = match &found {
        Ok(_) => Some(true),
        Err(ApiError::Unauthorized(_)) => Some(false),
        Err(_) => None,
    };
    state.throttle.checked(ip, hash, charged, valid);
    found
}

/// Middleware: every `/api/v1` request needs a valid bearer token, or the dashboard's session
/// cookie (from a host this server answers to, with the session's CSRF token on mutations).
/// `/mcp` takes bearer tokens only: no browser has business there. The request carries its
/// [`Principal`] and the [`Credential`] it came with.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let browser_ok = path != "/mcp" && !path.starts_with("/mcp/");
    let principal = if let Some(token) = bearer(req.headers()) {
        let hash = hash_token(token);
        checked_principal(&state, ClientIp::of(req.extensions()), &hash)
            .await
            .map(|p| (p, Credential::Token(hash)))
    } else if let Some(cookie) = session::cookie(req.headers()).filter(|_| browser_ok) {
        session_principal(&state, req.method(), req.headers(), cookie).await
    } else {
        Err(ApiError::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`".into(),
        ))
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let principal = principal.and_then(|(p, credential)| {
        if safe {
            return Ok((p, credential));
        }
        match state.limiter.check(&p.name, std::time::Instant::now()) {
            Ok(()) => Ok((p, credential)),
            Err(retry_after) => Err(ApiError::TooManyChanges {
                who: p.name.clone(),
                retry_after,
            }),
        }
    });
    match principal {
        Ok((principal, credential)) => {
            req.extensions_mut().insert(principal);
            req.extensions_mut().insert(credential);
            next.run(req).await
        }
        Err(err) => err.into_response(),
    }
}

/// The principal of a dashboard session and the session as a credential, after the Host,
/// Origin and CSRF checks.
pub async fn session_principal(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    cookie: &str,
) -> ApiResult<(Principal, Credential)> {
    if !session::host_ok(headers, state.public_host().as_deref())
        || !session::origin_ok(headers, state.public_origin().as_deref())
    {
        return Err(ApiError::Forbidden(
            "this request comes from another site or host name than this server's".into(),
        ));
    }
    let session = state
        .sessions
        .get(cookie)
        .ok_or_else(|| ApiError::Unauthorized("the session has ended: log in again".into()))?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !session::csrf_ok(headers, &session) {
        return Err(ApiError::Forbidden(format!(
            "missing or wrong {} header for this session",
            session::CSRF_HEADER
        )));
    }
    let principal = principal_for_hash(state, &session.token_hash).await?;
    Ok((
        principal,
        Credential::Session {
            key: session::key(cookie),
            token_hash: session.token_hash,
            expires: session.expires,
        },
    ))
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("not authenticated".into()))
    }
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
pub async fn check_scope(state: &AppState, who: &Principal, task_id: i64) -> ApiResult<()> {
    match who.scope {
        Some(scope) if !state.store.within_scope(scope, task_id).await? => Err(ApiError::Forbidden(format!(
            "this token may act only on task #{scope} and its subtasks"
        ))),
        _ => Ok(()),
    }
}

/// Refuses a spawned run's token creating a task that is not a subtask within its scope.
pub async fn check_new_task_scope(
    state: &AppState,
    who: &Principal,
    parent_id: Option<i64>,
) -> ApiResult<()> {
    match (who.scope, parent_id) {
        (None, _) => Ok(()),
        (Some(scope), None) => Err(ApiError::Forbidden(format!(
            "this token may only create subtasks of task #{scope} (set parent_id)"
        ))),
        (Some(_), Some(parent)) => check_scope(state, who, parent).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("xyz"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
    }
}
