//! MCP at `/mcp`: a real MCP client (rmcp over streamable HTTP) works tasks with an agent's
//! bearer token; failures come back as tool errors with the REST API's codes; a session hears
//! when a lease it holds is gone; requests without a valid token never reach MCP. `sessions`
//! drives the protocol by hand (limits, ownership, cancellation, shutdown); `python` uses the
//! official Python SDK.

mod python;
pub(crate) mod sessions;

use std::time::Duration;

use reqwest::StatusCode;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::Server;

/// An MCP client that keeps the log messages the server sends it.
#[derive(Clone)]
struct Agent {
    messages: mpsc::UnboundedSender<Value>,
}

#[expect(deprecated, reason = "logging notifications carry the lost-lease warnings")]
impl ClientHandler for Agent {
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.messages.send(params.data);
    }
}

type Client = RunningService<RoleClient, Agent>;

/// Connects an MCP client to the server with `token`.
async fn connect(server: &Server, token: &str) -> (Client, mpsc::UnboundedReceiver<Value>) {
    let (messages, inbox) = mpsc::unbounded_channel();
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", server.url)).auth_header(token);
    let client = Agent { messages }
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("the MCP client connects");
    (client, inbox)
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().expect("arguments are an object");
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool} is answered: {e}"))
}

/// The structured answer of a successful call.
fn ok(result: CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(false), "expected success: {result:?}");
    result.structured_content.expect("structured content")
}

/// The `{code, detail, …}` of a tool error.
fn refused(result: CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(true), "expected a tool error: {result:?}");
    let body = result.structured_content.expect("structured content");
    let text = result.content[0].as_text().expect("a text block").text.clone();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        body,
        "the text says the same"
    );
    body
}

/// Waits for the next log message from the server (it is pushed, so it comes promptly; the
/// limit only keeps a broken build from hanging).
async fn next_message(inbox: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(30), inbox.recv())
        .await
        .expect("a log message arrives")
        .expect("the client is still connected")
}

/// Files a task as admin and returns its id.
async fn task_id(server: &Server, body: Value) -> i64 {
    server.task(body).await["id"].as_i64().unwrap()
}

const TOOLS: [&str; 13] = [
    "list_tasks",
    "get_task",
    "why",
    "claim_task",
    "claim_next",
    "update_progress",
    "complete_task",
    "fail_task",
    "release_task",
    "block_task",
    "create_task",
    "reserve_paths",
    "release_paths",
];

#[tokio::test]
async fn lists_every_tool_with_its_schema() {
    let server = Server::start().await;
    let token = server.agent("claude-1", &[]).await;
    let (client, _) = connect(&server, &token).await;
    let info = client.peer_info().expect("the server introduced itself");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("taskyard")
    );
    assert!(info.instructions.as_deref().unwrap_or("").contains("fence"));

    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    let mut expected = TOOLS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for tool in &tools {
        let schema = &tool.input_schema;
        assert_eq!(schema["type"], "object", "{}", tool.name);
        assert!(schema["properties"].is_object(), "{}", tool.name);
        assert!(
            tool.description.as_deref().is_some_and(|d| d.len() > 80),
            "{} explains itself",
            tool.name
        );
    }
    let progress = tools.iter().find(|t| t.name == "update_progress").unwrap();
    assert_eq!(progress.input_schema["required"], json!(["task", "fence"]));
    assert!(progress.description.as_deref().unwrap().contains("lease_lost"));
    let create = tools.iter().find(|t| t.name == "create_task").unwrap();
    assert_eq!(create.input_schema["required"], json!(["title"]));
    assert!(create.input_schema["properties"]["parent_id"].is_object());
    let list = tools.iter().find(|t| t.name == "list_tasks").unwrap();
    for filter in [
        "status",
        "project",
        "priority",
        "kind",
        "capability",
        "route",
        "parent_id",
        "q",
        "limit",
        "cursor",
    ] {
        assert!(list.input_schema["properties"][filter].is_object(), "{filter}");
    }
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn an_agent_claims_reports_progress_and_completes_over_mcp() {
    let server = Server::start().await;
    let token = server.agent("claude-1", &["backend"]).await;
    let task = server
        .task(json!({"title": "Add rate limiting", "capabilities": ["backend"], "priority": "P1"}))
        .await;
    let id = task["id"].as_i64().unwrap();
    let (client, _) = connect(&server, &token).await;

    let listed = ok(call(&client, "list_tasks", json!({"status": "available"})).await);
    assert_eq!(listed["items"][0]["id"], id);

    let claimed = ok(call(&client, "claim_next", json!({})).await);
    assert_eq!(claimed["task"]["id"], id);
    assert_eq!(claimed["lease"]["holder"], "claude-1");
    let fence = claimed["lease"]["fence"].as_i64().unwrap();

    let shown = ok(call(&client, "get_task", json!({"task": id})).await);
    assert_eq!(shown["status"], "in_progress");
    assert!(shown["events"].as_array().unwrap().len() >= 2);

    let progressed = ok(call(
        &client,
        "update_progress",
        json!({"task": id, "fence": fence, "percent": 60, "note": "middleware written"}),
    )
    .await);
    assert_eq!(progressed["progress"]["percent"], 60);

    // The agent splits off a subtask while it works; a repeated key finds the same task.
    let created = ok(call(
        &client,
        "create_task",
        json!({"title": "Document the limiter", "parent_id": id, "key": "limiter-docs", "kind": "docs"}),
    )
    .await);
    assert_eq!(created["created"], true);
    assert_eq!(created["task"]["parent_id"], id);
    let again = ok(call(
        &client,
        "create_task",
        json!({"title": "Document the limiter", "key": "limiter-docs"}),
    )
    .await);
    assert_eq!(again["created"], false);
    assert_eq!(again["task"]["id"], created["task"]["id"]);
    let why = ok(call(&client, "why", json!({"task": "limiter-docs"})).await);
    assert_eq!(why["claimable"], true);

    let done = ok(call(
        &client,
        "complete_task",
        json!({"task": id, "fence": fence, "summary": "token bucket on /api",
               "deliverables": [{"kind": "commit", "ref": "3f2a9c1"}]}),
    )
    .await);
    assert_eq!(done["status"], "completed");

    // The REST API sees the same task, completed by the agent.
    let (status, after) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["status"], "completed");
    assert_eq!(after["result"]["summary"], "token bucket on /api");
    assert_eq!(after["result"]["deliverables"][0]["ref"], "3f2a9c1");
    let by_agent: Vec<&str> = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "claude-1")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(by_agent, ["task.claimed", "task.progress", "task.completed"]);

    // Nothing left for this agent (the docs subtask needs no capability, so it is claimable
    // by anyone: claim it, then claim-next has nothing).
    let sub = ok(call(&client, "claim_next", json!({})).await);
    assert_eq!(sub["task"]["key"], "limiter-docs");
    let none = ok(call(&client, "claim_next", json!({})).await);
    assert_eq!(
        (none["task"].clone(), none["lease"].clone()),
        (Value::Null, Value::Null)
    );

    // A waiting claim-next gets work filed while it waits: the task is filed only once the long
    // poll has found nothing and sleeps, so only the wake-up can hand it over.
    let waiting = server.app_store.bus().work_waiters();
    let (waited, filed) = tokio::join!(call(&client, "claim_next", json!({"wait_seconds": 60})), async {
        wait_until(|| server.app_store.bus().work_waiters() == waiting + 1).await;
        server
            .task(json!({"title": "late work", "capabilities": ["backend"]}))
            .await
    },);
    assert_eq!(ok(waited)["task"]["id"], filed["id"]);

    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_stale_fence_is_lease_lost_and_changes_nothing() {
    let server = Server::start().await;
    let a = server.agent("a", &[]).await;
    let b = server.agent("b", &[]).await;
    let id = task_id(&server, json!({"title": "contested"})).await;
    let (client, _) = connect(&server, &a).await;
    let first = ok(call(&client, "claim_task", json!({"task": id})).await);
    let old = first["lease"]["fence"].as_i64().unwrap();

    // An admin takes the task back and b claims it: a's fence is stale now.
    let (status, _) = server
        .post(
            &server.admin,
            &format!("/tasks/{id}/release"),
            json!({"fence": old}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, second) = server.post(&b, &format!("/tasks/{id}/claim"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, before) = server.get(&server.admin, &format!("/tasks/{id}")).await;

    let lost = refused(
        call(
            &client,
            "update_progress",
            json!({"task": id, "fence": old, "percent": 90}),
        )
        .await,
    );
    assert_eq!(lost["code"], "lease_lost", "{lost}");
    assert!(lost["detail"].as_str().unwrap().contains("stale"));
    let lost = refused(
        call(
            &client,
            "complete_task",
            json!({"task": id, "fence": old, "summary": "mine"}),
        )
        .await,
    );
    assert_eq!(lost["code"], "lease_lost");

    let (_, after) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    assert_eq!(before["status"], after["status"]);
    assert_eq!(before["progress"], after["progress"]);
    assert_eq!(after["lease"]["holder"], "b");
    assert_eq!(after["lease"]["fence"], second["lease"]["fence"]);
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_task_another_agent_holds_is_already_claimed() {
    let server = Server::start().await;
    let a = server.agent("a", &[]).await;
    let b = server.agent("b", &[]).await;
    let id = task_id(&server, json!({"title": "taken"})).await;
    let (status, _) = server.post(&b, &format!("/tasks/{id}/claim"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (client, _) = connect(&server, &a).await;
    let taken = refused(call(&client, "claim_task", json!({"task": id})).await);
    assert_eq!(taken["code"], "already_claimed");
    assert_eq!(taken["holder"], "b");
    let missing = refused(call(&client, "get_task", json!({"task": 999})).await);
    assert_eq!(missing["code"], "not_found");
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn bad_input_and_roles_are_refused_as_rest_refuses_them() {
    let server = Server::start().await;
    let agent = server.agent("a", &[]).await;
    let viewer = server.agent_with_role("v", &[], "viewer").await;
    let id = task_id(&server, json!({"title": "t"})).await;
    let (client, _) = connect(&server, &agent).await;
    let fence = ok(call(&client, "claim_task", json!({"task": id})).await)["lease"]["fence"]
        .as_i64()
        .unwrap();

    // The same body through REST and MCP: the same code, field and detail.
    let cases = [
        (
            "update_progress",
            "progress",
            json!({"fence": fence, "percent": 150}),
        ),
        (
            "update_progress",
            "progress",
            json!({"fence": fence, "colour": "red"}),
        ),
        ("complete_task", "complete", json!({"fence": fence})),
        ("fail_task", "fail", json!({"fence": 0, "reason": "x"})),
        ("claim_task", "claim", json!({"lease_seconds": 0})),
    ];
    for (tool, action, body) in cases {
        let (status, rest) = server
            .post(&agent, &format!("/tasks/{id}/{action}"), body.clone())
            .await;
        assert!(status.is_client_error(), "{tool}: {rest}");
        let mut args = body.as_object().cloned().unwrap();
        args.insert("task".into(), json!(id));
        let mcp = refused(call(&client, tool, Value::Object(args)).await);
        assert_eq!(mcp["code"], "invalid_input", "{tool}: {mcp}");
        assert_eq!(mcp["field"], rest["field"], "{tool}");
        assert_eq!(mcp["detail"], rest["detail"], "{tool}");
    }
    let too_long = refused(call(&client, "claim_next", json!({"wait_seconds": 61})).await);
    assert_eq!(too_long["field"], "wait_seconds");
    let bad_priority = refused(call(&client, "create_task", json!({"title": "x", "priority": "P9"})).await);
    assert_eq!(bad_priority["field"], "priority");
    let no_task = refused(call(&client, "get_task", json!({})).await);
    assert_eq!(no_task["field"], "task");
    let bad_filter = refused(call(&client, "list_tasks", json!({"status": "sleeping"})).await);
    assert_eq!(bad_filter["field"], "status");
    // Nothing above changed the task.
    let (_, task) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    assert_eq!(task["progress"]["percent"], 0);
    assert_eq!(task["status"], "in_progress");
    client.cancel().await.unwrap();

    // A viewer reads but may not claim or create.
    let (client, _) = connect(&server, &viewer).await;
    let listed = ok(call(&client, "list_tasks", json!({})).await);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let claim = refused(call(&client, "claim_next", json!({})).await);
    assert_eq!(claim["code"], "forbidden");
    let create = refused(call(&client, "create_task", json!({"title": "x"})).await);
    assert_eq!(create["code"], "forbidden");
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_session_hears_when_a_lease_it_holds_is_gone() {
    let server = Server::start().await;
    let token = server.agent("a", &[]).await;
    let cancelled = task_id(&server, json!({"title": "to be cancelled"})).await;
    let expiring = task_id(&server, json!({"title": "to expire"})).await;
    let (client, mut inbox) = connect(&server, &token).await;

    let claim = ok(call(&client, "claim_task", json!({"task": cancelled})).await);
    let (status, _) = server
        .post(&server.admin, &format!("/tasks/{cancelled}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let message = next_message(&mut inbox).await;
    assert_eq!(message["event"], "lease_lost");
    assert_eq!(message["task_id"], cancelled);
    assert_eq!(message["fence"], claim["lease"]["fence"]);
    assert!(
        message["reason"].as_str().unwrap().contains("admin cancelled"),
        "{message}"
    );

    let claim = ok(call(
        &client,
        "claim_task",
        json!({"task": expiring, "lease_seconds": 1}),
    )
    .await);
    let expires =
        chrono::DateTime::parse_from_rfc3339(claim["lease"]["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(left.max(0) as u64 + 50)).await;
    assert_eq!(server.app_store.reap_expired_leases().await.unwrap(), 1);
    let message = next_message(&mut inbox).await;
    assert_eq!(message["task_id"], expiring);
    assert!(
        message["message"].as_str().unwrap().contains("Stop working"),
        "{message}"
    );

    // One message per lost lease: messages come in order, so a repeat about either lease would
    // arrive before the one about a lease lost afterwards.
    let marker = task_id(&server, json!({"title": "lost last"})).await;
    ok(call(&client, "claim_task", json!({"task": marker})).await);
    let (status, _) = server
        .post(&server.admin, &format!("/tasks/{marker}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let message = next_message(&mut inbox).await;
    assert_eq!(message["task_id"], marker, "{message}");
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_session_hears_only_of_leases_it_claimed_or_held_when_it_started() {
    let server = Server::start().await;
    let token = server.agent("a", &[]).await;
    let mut ids = Vec::new();
    for title in [
        "held before",
        "claimed by one",
        "claimed by two",
        "claimed over REST",
    ] {
        ids.push(task_id(&server, json!({ "title": title })).await);
    }
    let [before, by_one, by_two, by_rest] = ids[..] else {
        unreachable!()
    };
    let claim = |id: i64| {
        let (server, token) = (&server, &token);
        async move {
            let (status, body) = server.post(token, &format!("/tasks/{id}/claim"), json!({})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    claim(before).await;
    let subscribers = server.app_store.bus().event_subscribers();
    let (one, mut inbox_one) = connect(&server, &token).await;
    let (two, mut inbox_two) = connect(&server, &token).await;
    // Both watchers have read what the agent held at their start.
    wait_until(|| server.app_store.bus().event_subscribers() == subscribers + 2).await;
    ok(call(&one, "claim_task", json!({"task": by_one})).await);
    ok(call(&two, "claim_task", json!({"task": by_two})).await);
    claim(by_rest).await;

    for id in [by_rest, by_two, by_one, before] {
        let (status, _) = server
            .post(&server.admin, &format!("/tasks/{id}/cancel"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Each session hears of its own claim, then of the lease held when it started (whichever
    // session claimed that one); a message about another lease would have come before these.
    for (inbox, own) in [(&mut inbox_one, by_one), (&mut inbox_two, by_two)] {
        let first = next_message(inbox).await;
        assert_eq!(first["task_id"], own, "{first}");
        assert!(
            first["reason"].as_str().unwrap().contains("admin cancelled"),
            "{first}"
        );
        let second = next_message(inbox).await;
        assert_eq!(second["task_id"], before, "{second}");
    }
    one.cancel().await.unwrap();
    two.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn closing_a_session_ends_its_lease_watcher() {
    let server = Server::start().await;
    let token = server.agent("a", &[]).await;
    let before = server.app_store.bus().event_subscribers();
    let (client, _) = connect(&server, &token).await;
    wait_until(|| server.app_store.bus().event_subscribers() == before + 1).await;
    client.cancel().await.unwrap();
    wait_until(|| server.app_store.bus().event_subscribers() == before).await;
    server.stop().await;
}

/// Waits for a condition that follows promptly from what a test just did (the limit only keeps
/// a broken build from hanging).
async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_before_mcp() {
    let server = Server::start().await;
    let initialize = sessions::initialize_request();
    let http = reqwest::Client::new();
    for token in [None, Some("ty_not-a-real-token")] {
        let mut request = http
            .post(format!("{}/mcp", server.url))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "token {token:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    // The session stream and the end of a session are guarded alike, even for a real session.
    let token = server.agent("a", &[]).await;
    let session = sessions::Session::open(&server, &token).await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = http
            .request(method.clone(), format!("{}/mcp", server.url))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session.id)
            .header("mcp-protocol-version", sessions::PROTOCOL)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{method}");
    }
    assert_eq!(
        session.delete().await,
        StatusCode::ACCEPTED,
        "the session was still open"
    );
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", server.url)).auth_header("ty_wrong");
    let (messages, _) = mpsc::unbounded_channel();
    let refused = Agent { messages }
        .serve(StreamableHttpClientTransport::from_config(config))
        .await;
    assert!(refused.is_err(), "an MCP client with a bad token cannot connect");
    server.stop().await;
}
