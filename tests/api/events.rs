//! The SSE stream delivers committed changes and resumes from Last-Event-ID; streams opened with
//! a token end when that token is revoked.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::mcp::sessions::Session;
use crate::spawn::{agent_type, wait_for};
use crate::support::Server;

/// Reads SSE messages until `want` of them arrived; returns (id, kind, data) for each.
pub(crate) async fn read_events(resp: reqwest::Response, want: usize) -> Vec<(i64, String, Value)> {
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    let mut out = Vec::new();
    while out.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event arrives")
            .expect("stream open")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, None, None);
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            if let (Some(id), Some(kind), Some(data)) = (id, kind, data) {
                out.push((id, kind, data));
            }
        }
    }
    out
}

/// Reads SSE messages until one about task `task_id` arrives; returns its kind.
pub(crate) async fn read_until_task(resp: reqwest::Response, task_id: &Value) -> String {
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event arrives")
            .expect("the stream is still open")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let data = message
                .lines()
                .find_map(|line| line.strip_prefix("data:"))
                .and_then(|v| serde_json::from_str::<Value>(v.trim()).ok());
            if let Some(data) = data.filter(|d| &d["task_id"] == task_id) {
                return data["kind"].as_str().unwrap_or_default().to_string();
            }
        }
    }
}

/// Reads a streamed response to its end, which must come within 30 s (the test passes as soon
/// as it does); returns the body.
pub(crate) async fn read_to_end(resp: reqwest::Response, what: &str) -> String {
    let mut stream = resp.bytes_stream();
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.expect("the stream ends cleanly"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} is still open after 30 s"));
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_stream_live_and_resume_after_a_disconnect() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/api/v1/events", server.url))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let task = server.task(json!({"title": "watched"})).await;
    let events = read_events(resp, 1).await;
    assert_eq!(events[0].1, "task.created");
    assert_eq!(events[0].2["task_id"], task["id"]);
    assert_eq!(events[0].2["data"]["title"], "watched");
    let last_seen = events[0].0;

    // While disconnected, more happens; a reconnect with Last-Event-ID gets exactly that.
    let agent = server.agent("a", &[]).await;
    let (_, claim) = server
        .post(&agent, &format!("/tasks/{}/claim", task["id"]), json!({}))
        .await;
    let resp = http
        .get(format!("{}/api/v1/events", server.url))
        .bearer_auth(&server.admin)
        .header("Last-Event-ID", last_seen.to_string())
        .send()
        .await
        .unwrap();
    let events = read_events(resp, 2).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds, ["agent.created", "task.claimed"]);
    assert_eq!(events[1].2["data"]["fence"], claim["lease"]["fence"]);
    assert!(events[0].0 > last_seen && events[1].0 > events[0].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_only_the_kinds_asked_for_live_and_replayed() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let open = |query: &str| {
        http.get(format!("{}/api/v1/events?{query}", server.url))
            .bearer_auth(&server.admin)
            .send()
    };
    let live = open("kinds=task.*,run.exited").await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    // Noise first (an agent and a loop run), then task news.
    let agent = server.agent("a", &[]).await;
    server
        .loops
        .context()
        .store
        .record_loop_run(taskyard::store::NewLoopRun {
            loop_name: "noise".into(),
            kind: "lease-reaper".into(),
            started_at: taskyard::domain::Timestamp::now(),
            ok: true,
            summary: "nothing".into(),
            details: json!({}),
        })
        .await
        .unwrap();
    let task = server.task(json!({"title": "watched"})).await;
    server
        .post(&agent, &format!("/tasks/{}/claim", task["id"]), json!({}))
        .await;
    let events = read_events(live, 2).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        kinds,
        ["task.created", "task.claimed"],
        "no agent.created, no loop.ran"
    );

    // The history replayed after a cursor is filtered the same way.
    let replay = open("after=0&kinds=task.claimed").await.unwrap();
    let events = read_events(replay, 1).await;
    assert_eq!(events[0].1, "task.claimed");
    let (status, problem) = server.get(&server.admin, "/events?kinds=task.").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "kinds");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_token_that_opened_them_is_revoked() {
    // Two spawned runs: each writes its token where the test can read it, then waits. A run's
    // token is revoked when the run ends.
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(
                scripts.path(),
                "waiter",
                "echo \"$TASKYARD_TOKEN\" > \"$OUT/token-$TASKYARD_RUN_ID.tmp\"\n\
                 mv \"$OUT/token-$TASKYARD_RUN_ID.tmp\" \"$OUT/token-$TASKYARD_RUN_ID\"\n\
                 echo up\nsleep 300",
                |_| {},
            ),
        );
    })
    .await;
    let mut events = server.app_store.bus().subscribe();
    for title in ["first", "second"] {
        server.task(json!({"title": title, "priority": "P0"})).await;
    }
    server.loops.context().spawner.assign().await.unwrap();
    let first = wait_for(&mut events, |e| e.kind() == "run.started").await.data()["run_id"].clone();
    let second = wait_for(&mut events, |e| e.kind() == "run.started").await.data()["run_id"].clone();
    let token_file = scripts.path().join(format!("token-{first}"));
    tokio::time::timeout(Duration::from_secs(60), async {
        while !token_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the run wrote its token");
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();

    // With the first run's token: the event stream, the second run's log followed, and an MCP
    // session's stream of server messages.
    let http = reqwest::Client::new();
    let open = |path: String| {
        http.get(format!("{}{path}", server.url))
            .bearer_auth(&token)
            .send()
    };
    let sse = open("/api/v1/events".into()).await.unwrap();
    let log = open(format!("/api/v1/runs/{second}/log?follow=true"))
        .await
        .unwrap();
    let session = Session::open(&server, &token).await;
    let mcp = session.stream_as(&token).send().await.unwrap();
    for resp in [&sse, &log, &mcp] {
        assert_eq!(resp.status(), StatusCode::OK, "{}", resp.url());
    }

    // The first run ends, and its token with it: every stream it opened ends.
    let (status, _) = server
        .post(&server.admin, &format!("/runs/{first}/kill"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    read_to_end(sse, "the event stream").await;
    read_to_end(log, "the followed log").await;
    read_to_end(mcp, "the MCP stream").await;
    let (status, _) = server.get(&token, "/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the token is revoked");
    // The log's run lives on: its follow ended with the token, not with the run.
    let (_, run) = server.get(&server.admin, &format!("/runs/{second}")).await;
    assert_eq!(run["status"], "running", "{run}");

    let (status, _) = server
        .post(&server.admin, &format!("/runs/{second}/kill"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for(&mut events, |e| {
        e.kind() == "run.exited" && e.data()["run_id"] == second
    })
    .await;
    server.stop().await;
}
