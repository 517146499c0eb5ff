//! The web dashboard: its page and assets (from `dashboard/`, embedded at build time), login
//! with a token or a one-time link, and logout. The page talks to `/api/v1` with the session
//! cookie; every mutation carries the session's CSRF token, and requests from another site or
//! host name are refused (see `session.rs`).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::notify::email::escape;

use crate::error::ApiError;

use crate::service::access::principal_for_hash;
use crate::token::hash_token;

use super::auth::checked_principal;
use super::session::{self, clear_cookie, set_cookie};
use super::throttle::ClientIp;
use super::AppState;

const INDEX: &str = include_str!("../../dashboard/index.html");
const LOGIN: &str = include_str!("../../dashboard/login.html");
const APP_JS: &str = include_str!("../../dashboard/app.js");
const APP_CSS: &str = include_str!("../../dashboard/app.css");
const FAVICON: &str = include_str!("../../dashboard/favicon.svg");

/// Only this page's own scripts, styles and API: no inline script, no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The routes of this file.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON) }))
        .route("/login", get(login_form).post(login))
        .route("/logout", axum::routing::post(logout))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// A page with the security headers every dashboard page carries.
fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn login_page(status: StatusCode, error: &str) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(error))
    };
    page(status, LOGIN.replace("{{error}}", &error))
}

fn refused_host() -> Response {
    (
        StatusCode::FORBIDDEN,
        "this server does not answer to that host name; use its address or server.public_url",
    )
        .into_response()
}

/// Whether the session cookie carries `Secure` (see [`session::secure_cookie`]).
fn secure_cookie(state: &AppState) -> bool {
    session::secure_cookie(state.config.server.public_url.as_deref())
}

fn redirect_with_cookie(to: &str, cookie: String) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !session::host_ok(&headers, state.public_host().as_deref()) {
        return refused_host();
    }
    let found = match session::cookie(&headers) {
        Some(cookie) => state.sessions.get(cookie).await,
        None => Ok(None),
    };
    let found = match found {
        Ok(Some(found)) => found,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(err) => return ApiError::from(err).into_response(),
    };
    let who = match principal_for_hash(&state, &found.token_hash).await {
        Ok(who) => who,
        Err(_) => return Redirect::to("/login").into_response(),
    };
    page(
        StatusCode::OK,
        INDEX
            .replace("{{csrf}}", &found.csrf)
            .replace("{{user}}", &escape(&who.name))
            .replace("{{role}}", who.role.as_str()),
    )
}

/// `?code=` of the one-time login link.
#[derive(Debug, Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// The login page for a refused attempt: too many from this address, or from this token.
fn too_many(refused: ApiError) -> Response {
    let retry_after = match &refused {
        ApiError::RateLimited { retry_after, .. } => *retry_after,
        _ => 1,
    };
    let mut page = login_page(StatusCode::TOO_MANY_REQUESTS, &refused.to_string());
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    page
}

/// A new session for the token with SHA-256 `hash`, and the redirect that sets its cookie.
async fn start_session(state: &AppState, hash: [u8; 32], owner: &str) -> Response {
    match state.sessions.create(hash, owner).await {
        Ok(cookie) => redirect_with_cookie("/", set_cookie(&cookie, secure_cookie(state))),
        Err(err) => ApiError::from(err).into_response(),
    }
}

async fn login_form(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if !session::host_ok(&headers, state.public_host().as_deref()) {
        return refused_host();
    }
    let Some(code) = q.code else {
        return login_page(StatusCode::OK, "");
    };
    if let Err(refused) = state.throttle.login(ip) {
        return too_many(refused);
    }
    let owner = match state.sessions.redeem(&code).await {
        Ok(Some(hash)) => principal_for_hash(&state, &hash).await.map(|who| (hash, who)),
        Err(err) => return ApiError::from(err).into_response(),
        Ok(None) => {
            state.throttle.failed(ip);
            Err(ApiError::Unauthorized("unknown code".into()))
        }
    };
    match owner {
        Ok((hash, who)) => start_session(&state, hash, &who.name).await,
        Err(_) => login_page(
            StatusCode::UNAUTHORIZED,
            "That login link was already used or has expired. Log in with a token.",
        ),
    }
}

async fn login(State(state): State<AppState>, ip: ClientIp, headers: HeaderMap, body: Bytes) -> Response {
    if !session::host_ok(&headers, state.public_host().as_deref()) {
        return refused_host();
    }
    if !session::origin_ok(&headers, state.public_origin().as_deref()) {
        return login_page(StatusCode::FORBIDDEN, "This form was sent from another site.");
    }
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    if token.is_empty() {
        return login_page(StatusCode::UNAUTHORIZED, "Enter a token.");
    }
    if let Err(refused) = state.throttle.login(ip) {
        return too_many(refused);
    }
    let hash = hash_token(&token);
    match checked_principal(&state, ip, &hash).await {
        Ok(who) if who.scope.is_none() => {
            tracing::info!(user = %who.name, "dashboard login");
            start_session(&state, hash, &who.name).await
        }
        Ok(_) => login_page(
            StatusCode::FORBIDDEN,
            "A spawned run's token cannot open the dashboard.",
        ),
        Err(refused @ ApiError::RateLimited { .. }) => too_many(refused),
        Err(_) => login_page(StatusCode::UNAUTHORIZED, "That token is not valid."),
    }
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !session::host_ok(&headers, state.public_host().as_deref())
        || !session::origin_ok(&headers, state.public_origin().as_deref())
    {
        return refused_host();
    }
    if let Some(cookie) = session::cookie(&headers) {
        if let Err(err) = state.sessions.remove(cookie).await {
            return ApiError::from(err).into_response();
        }
    }
    redirect_with_cookie("/login", clear_cookie())
}
