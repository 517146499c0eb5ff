//! The error every HTTP caller sees: `application/problem+json` with a stable `code`.
//! Store and input errors map to it in one place, here.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::input::JsonError;
use crate::domain::{InputError, Refused};
use crate::store::StoreError;

/// An error answered to an HTTP caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not the right JSON (400).
    #[error("{0}")]
    BadRequest(String),
    /// A field has a wrong value (422).
    #[error(transparent)]
    Invalid(#[from] InputError),
    /// No such thing (404).
    #[error("{0}")]
    NotFound(String),
    /// No valid token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Another holder has the task (409).
    #[error("task is already claimed by {holder}")]
    AlreadyClaimed {
        /// The holder.
        holder: String,
    },
    /// The task cannot be claimed now (409).
    #[error("{0}")]
    NotReady(String),
    /// The caller's lease is gone (409).
    #[error("{0}")]
    LeaseLost(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Wrong method for this path (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Too many changes from one token (429, with Retry-After).
    #[error("too many changes from {who}: try again in {retry_after} s")]
    TooManyChanges {
        /// The token's principal.
        who: String,
        /// Seconds until the next change is allowed.
        retry_after: u64,
    },
    /// The caller has used up a limit: on what it may hold open at once (MCP sessions,
    /// streams, long polls) or on attempts (logins, failed authentication) (429, with
    /// Retry-After).
    #[error("{detail}")]
    RateLimited {
        /// What limit, named by its setting and value.
        detail: String,
        /// Seconds after which trying again may succeed.
        retry_after: u64,
    },
    /// The disk under the data folder is full: nothing was changed (507); the cause is logged.
    #[error("the server's storage is full, so nothing was changed; try again once space is freed")]
    StorageFull(#[source] StoreError),
    /// The database cannot be reached right now: nothing was changed (503); the cause is logged.
    #[error("the database is unavailable right now, so nothing was changed; try again shortly")]
    Unavailable(#[source] StoreError),
    /// Unexpected failure (500); the cause is logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The problem+json body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened, for this request.
    pub detail: String,
    /// Stable machine-readable code: `invalid_input`, `not_found`, `unauthorized`, `forbidden`,
    /// `already_claimed`, `not_ready`, `lease_lost`, `conflict`, `payload_too_large`,
    /// `rate_limited`, `storage_full`, `unavailable`, `internal`.
    pub code: &'static str,
    /// The offending field, for `invalid_input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The current holder, for `already_claimed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

impl ApiError {
    /// The HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::AlreadyClaimed { .. } => (StatusCode::CONFLICT, "already_claimed"),
            ApiError::NotReady(_) => (StatusCode::CONFLICT, "not_ready"),
            ApiError::LeaseLost(_) => (StatusCode::CONFLICT, "lease_lost"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "invalid_input"),
            ApiError::TooManyChanges { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Logs an internal error with its whole cause chain (the caller sees only that it happened),
    /// and a full disk, which only an operator can fix.
    pub fn log_internal(&self) {
        match self {
            ApiError::Internal(err) => tracing::error!(error = format!("{err:#}"), "request failed"),
            ApiError::StorageFull(err) => {
                tracing::error!(error = %err, "a change was refused: the data folder's disk is full")
            }
            ApiError::Unavailable(err) => {
                tracing::warn!(error = %err, "a request was refused: the database is unavailable")
            }
            _ => {}
        }
    }

    /// The problem body for this error.
    pub fn problem(&self) -> Problem {
        let (status, code) = self.status_and_code();
        let detail = match self {
            ApiError::Internal(_) => "internal error; the server log has the details".to_string(),
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:taskyard:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            code,
            field: match self {
                ApiError::Invalid(e) => Some(e.field.clone()),
                _ => None,
            },
            holder: match self {
                ApiError::AlreadyClaimed { holder } => Some(holder.clone()),
                _ => None,
            },
        }
    }
}

impl From<JsonError> for ApiError {
    fn from(err: JsonError) -> Self {
        match err {
            JsonError::Syntax(m) => ApiError::BadRequest(m),
            JsonError::Field(e) => ApiError::Invalid(e),
        }
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            Refused::AlreadyClaimed { holder } => ApiError::AlreadyClaimed { holder },
            Refused::NotReady(m) => ApiError::NotReady(m),
            Refused::LeaseLost(m) => ApiError::LeaseLost(m),
            Refused::Forbidden(m) => ApiError::Forbidden(m),
            Refused::Conflict(m) => ApiError::Conflict(m),
            Refused::Invalid(e) => ApiError::Invalid(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Refused(refused) => refused.into(),
            full @ StoreError::StorageFull(_) => ApiError::StorageFull(full),
            down @ StoreError::Unavailable(_) => ApiError::Unavailable(down),
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_internal();
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response();
        if let ApiError::TooManyChanges { retry_after, .. } | ApiError::RateLimited { retry_after, .. } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after.into());
        }
        response
    }
}

/// Result of an HTTP handler.
pub type ApiResult<T> = Result<T, ApiError>;
