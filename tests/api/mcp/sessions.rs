//! MCP sessions driven by hand over HTTP: the limits on open sessions and the slot an ended one
//! frees, a session refusing every token but the one that opened it, a waiting `claim_next`
//! that is cancelled (by the client, or by dropping its stream) claiming nothing, and an open
//! session stream not holding up shutdown.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::{task_id, wait_until};
use crate::support::Server;

/// The protocol revision these tests speak.
pub const PROTOCOL: &str = "2025-06-18";

/// An `initialize` request.
pub fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "1"}}
    })
}

/// An MCP session driven by hand.
pub struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    /// The `Mcp-Session-Id`.
    pub id: String,
}

impl Session {
    /// Opens a session with `token`.
    pub async fn open(server: &Server, token: &str) -> Session {
        match Self::try_open(server, token).await {
            Ok(session) => session,
            Err((status, body)) => panic!("the session did not open: {status} {body}"),
        }
    }

    /// Opens a session with `token`, or returns the refusal.
    pub async fn try_open(server: &Server, token: &str) -> Result<Session, (StatusCode, Value)> {
        let http = reqwest::Client::new();
        let url = format!("{}/mcp", server.url);
        let response = http
            .post(&url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize_request())
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            return Err((response.status(), response.json().await.unwrap_or(Value::Null)));
        }
        let id = response.headers()["mcp-session-id"].to_str().unwrap().to_string();
        // The answer ends its stream.
        let answer = response.text().await.unwrap();
        assert!(answer.contains("serverInfo"), "{answer}");
        let session = Session {
            http,
            url,
            token: token.to_string(),
            id,
        };
        let notified = session
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .unwrap();
        assert_eq!(notified.status(), StatusCode::ACCEPTED);
        Ok(session)
    }

    fn with_session(&self, request: RequestBuilder, token: &str) -> RequestBuilder {
        request
            .bearer_auth(token)
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", PROTOCOL)
    }

    /// A POST of `message` in this session with `token`.
    pub fn post_as(&self, token: &str, message: &Value) -> RequestBuilder {
        let request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(message);
        self.with_session(request, token)
    }

    /// A POST of `message` in this session.
    pub fn post(&self, message: &Value) -> RequestBuilder {
        self.post_as(&self.token, message)
    }

    /// The GET that opens the session's stream of server messages, with `token`.
    pub fn stream_as(&self, token: &str) -> RequestBuilder {
        let request = self.http.get(&self.url).header("accept", "text/event-stream");
        self.with_session(request, token)
    }

    /// The DELETE that ends the session, with `token`.
    pub fn delete_as(&self, token: &str) -> RequestBuilder {
        self.with_session(self.http.delete(&self.url), token)
    }

    /// Ends the session.
    pub async fn delete(&self) -> StatusCode {
        self.delete_as(&self.token).send().await.unwrap().status()
    }
}

fn tools_list() -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
}

fn claim_next(id: i64, wait_seconds: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "claim_next", "arguments": {"wait_seconds": wait_seconds}}})
}

/// The problem+json body of a refusal with `status`.
async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let kind = response.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(kind, "application/problem+json");
    response.json().await.unwrap()
}

/// The session answers `tools/list`.
async fn assert_lists_tools(session: &Session) {
    let listed = session.post(&tools_list()).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert!(listed.text().await.unwrap().contains("claim_next"));
}

/// Sends `request`, a claim_next that waits for work, and returns once its long poll sleeps.
/// The task holds the answer stream open until it is aborted.
async fn start_waiting(server: &Server, request: RequestBuilder) -> JoinHandle<()> {
    let call = tokio::spawn(async move {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.bytes().await;
    });
    wait_until(|| server.app_store.bus().work_waiters() == 1).await;
    call
}

/// Once the long poll has stopped waiting, a task filed is never claimed: the wait is over for
/// good, and it claimed nothing on the way out.
async fn assert_the_wait_ended_claiming_nothing(server: &Server) {
    wait_until(|| server.app_store.bus().work_waiters() == 0).await;
    let id = task_id(server, json!({"title": "filed after the wait ended"})).await;
    let (_, task) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    assert_eq!(task["status"], "available", "{task}");
    assert_eq!(task["attempts"], 0, "{task}");
    assert!(task["lease"].is_null(), "{task}");
    let kinds: Vec<&str> = task["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(!kinds.contains(&"task.claimed"), "{kinds:?}");
}

#[tokio::test]
async fn sessions_are_limited_per_token_and_in_all_and_an_ended_one_frees_its_slot() {
    let server = Server::start_with(|config| {
        config.server.mcp_max_sessions = 3;
        config.server.mcp_max_sessions_per_agent = 2;
    })
    .await;
    let a = server.agent("a", &[]).await;
    let b = server.agent("b", &[]).await;
    let first = Session::open(&server, &a).await;
    let _second = Session::open(&server, &a).await;
    let (status, body) = Session::try_open(&server, &a)
        .await
        .err()
        .expect("a third session of a is refused");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "rate_limited");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("a already has 2 open MCP sessions"), "{detail}");

    let _third = Session::open(&server, &b).await;
    let (status, body) = Session::try_open(&server, &b)
        .await
        .err()
        .expect("a fourth session on the server is refused");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("the server already has 3 open MCP sessions"),
        "{detail}"
    );

    // Ending a session frees its slot at once, and the ended session is gone.
    assert_eq!(first.delete().await, StatusCode::ACCEPTED);
    let fourth = Session::open(&server, &b).await;
    let gone = first.post(&tools_list()).send().await.unwrap();
    assert_eq!(problem(gone, StatusCode::NOT_FOUND).await["code"], "not_found");
    assert_lists_tools(&fourth).await;
    server.stop().await;
}

#[tokio::test]
async fn a_session_serves_only_the_token_that_opened_it() {
    let server = Server::start().await;
    let a = server.agent("a", &[]).await;
    let b = server.agent("b", &[]).await;
    let session = Session::open(&server, &a).await;
    for other in [&b, &server.admin] {
        let requests = [
            ("POST", session.post_as(other, &tools_list())),
            ("GET", session.stream_as(other)),
            ("DELETE", session.delete_as(other)),
        ];
        for (method, request) in requests {
            let refused = problem(request.send().await.unwrap(), StatusCode::FORBIDDEN).await;
            assert_eq!(refused["code"], "forbidden", "{method}");
            assert!(
                refused["detail"].as_str().unwrap().contains("another token"),
                "{method}: {refused}"
            );
        }
    }
    // Still open, and still a's.
    assert_lists_tools(&session).await;
    assert_eq!(session.delete().await, StatusCode::ACCEPTED);
    server.stop().await;
}

#[tokio::test]
async fn a_waiting_claim_next_the_client_cancels_claims_nothing() {
    let server = Server::start().await;
    let token = server.agent("a", &[]).await;
    let session = Session::open(&server, &token).await;
    // A cancelled request gets no answer: its stream stays open until the test ends it.
    let call = start_waiting(&server, session.post(&claim_next(7, 60))).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 7, "reason": "changed my mind"}});
    let cancelled = session.post(&cancel).send().await.unwrap();
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    assert_the_wait_ended_claiming_nothing(&server).await;
    call.abort();
    assert_eq!(session.delete().await, StatusCode::ACCEPTED);
    server.stop().await;
}

#[tokio::test]
async fn a_waiting_claim_next_whose_stream_is_dropped_claims_nothing() {
    let server = Server::start().await;
    let token = server.agent("a", &[]).await;
    let session = Session::open(&server, &token).await;
    // On a connection of its own, so that dropping the answer closes it.
    let request = reqwest::Client::new()
        .post(format!("{}/mcp", server.url))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", PROTOCOL)
        .json(&claim_next(8, 60));
    let call = start_waiting(&server, request).await;
    // The client gives up: its answer could no longer reach it, so the call is cancelled.
    call.abort();
    let _ = call.await;
    assert_the_wait_ended_claiming_nothing(&server).await;
    // The session itself lives on.
    assert_lists_tools(&session).await;
    assert_eq!(session.delete().await, StatusCode::ACCEPTED);
    server.stop().await;
}

#[tokio::test]
async fn an_open_session_stream_does_not_hold_up_shutdown() {
    let server = Server::start().await;
    let token = server.agent("a", &[]).await;
    let session = Session::open(&server, &token).await;
    // The session's server-to-client stream is open (its headers have arrived) when the
    // server is told to stop.
    let stream = session.stream_as(&token).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("the server stops with an MCP stream open");
    drop(stream);
}
