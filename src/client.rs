//! The HTTP client the CLI (and the benchmark) use to talk to a running server.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A problem+json answer from the server.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiProblem {
    /// HTTP status.
    pub status: u16,
    /// Stable code, e.g. `lease_lost`.
    pub code: String,
    /// What happened.
    pub detail: String,
    /// The offending field, for `invalid_input`.
    pub field: Option<String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{} ({}{})", .0.detail, .0.code, .0.field.as_ref().map(|f| format!(", field {f}")).unwrap_or_default())]
    Api(ApiProblem),
    /// The server could not be reached.
    #[error("cannot reach taskyard at {url}: is `taskyard serve` running? ({source})")]
    Unreachable {
        /// The server URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The connection broke or timed out during the call.
    #[error("the call to taskyard at {url} failed: {}", error_chain(.source))]
    Transport {
        /// The server URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// There is no token to send.
    #[error(
        "no token: pass --token, set TASKYARD_TOKEN, or run from the folder that holds \
         .taskyard/admin.token (or pass --data-dir)"
    )]
    NoToken,
    /// The answer was not what the API promises.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

/// An error with its causes, one after another (reqwest's own message alone says little).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl ClientError {
    /// The error for a request that did not get an answer.
    fn transport(url: &str, source: reqwest::Error) -> Self {
        let url = url.to_string();
        if source.is_connect() {
            ClientError::Unreachable { url, source }
        } else {
            ClientError::Transport { url, source }
        }
    }

    /// The problem code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api(p) => Some(&p.code),
            _ => None,
        }
    }
}

/// A client for one server and token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// How many times one call is sent again after `429 rate_limited` before the error is returned.
const RATE_LIMIT_RETRIES: u32 = 5;
/// Longest Retry-After, in seconds, the client waits out by itself.
const MAX_RATE_LIMIT_WAIT: u64 = 60;

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7311`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// Calls `method path` (path below `/api/v1`, or absolute when it starts with `/api` or
    /// `/healthz`) with an optional JSON body. `Ok(None)` means 204 No Content.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Option<T>, ClientError> {
        let url = if path.starts_with("/api/") || path.starts_with("/healthz") {
            format!("{}{path}", self.base)
        } else {
            format!("{}/api/v1{path}", self.base)
        };
        if self.token.is_none() && !path.starts_with("/healthz") {
            return Err(ClientError::NoToken);
        }
        let mut refusals = 0;
        let response = loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|source| ClientError::transport(&self.base, source))?;
            // Over the rate limit nothing was changed: wait as told and send it again.
            let wait = (response.status() == StatusCode::TOO_MANY_REQUESTS)
                .then(|| {
                    response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1)
                        .max(1)
                })
                // A long wait is the caller's to decide on: the error says how long.
                .filter(|&wait| wait <= MAX_RATE_LIMIT_WAIT && refusals < RATE_LIMIT_RETRIES);
            if let Some(wait) = wait {
                refusals += 1;
                tracing::info!(
                    url,
                    wait,
                    "over the server's rate limit; sending again after the wait it asked for"
                );
                // Read the refusal so the connection can be reused.
                let _ = response.bytes().await;
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            break response;
        };
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::transport(&self.base, source))?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ApiProblem>(&bytes) {
                Ok(problem) => ClientError::Api(problem),
                Err(_) => ClientError::Decode(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes))),
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::Decode(format!("{e}: {}", String::from_utf8_lossy(&bytes))))
    }

    /// GET of a streamed body (such as a followed run log): the bytes as they arrive.
    pub async fn stream(
        &self,
        path: &str,
    ) -> Result<impl futures::Stream<Item = reqwest::Result<bytes::Bytes>>, ClientError> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(24 * 3600));
        match &self.token {
            Some(token) => request = request.bearer_auth(token),
            None => return Err(ClientError::NoToken),
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::transport(&self.base, source))?;
        if !response.status().is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(match serde_json::from_slice::<ApiProblem>(&bytes) {
                Ok(problem) => ClientError::Api(problem),
                Err(_) => ClientError::Decode(String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        Ok(response.bytes_stream())
    }

    /// GET returning JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None::<&Value>)
            .await?
            .ok_or_else(|| ClientError::Decode("empty answer".into()))
    }

    /// POST with a JSON body; `None` for 204.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Option<Value>, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }
}
