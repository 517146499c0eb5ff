//! Authentication over HTTP: a request's bearer token or dashboard session, resolved to its
//! principal by [`crate::service::access`] within the throttle on failed attempts and the rate
//! limit on changes.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::domain::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::access::principal_for_hash;
use crate::token::hash_token;

use super::credential::Credential;
use super::throttle::ClientIp;
use super::{session, AppState};

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
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
        .await?
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
            expires: session.expires_at,
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
}
