//! The SSE stream delivers committed changes and resumes from Last-Event-ID.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::support::Server;

/// Reads SSE messages until `want` of them arrived; returns (id, kind, data) for each.
async fn read_events(resp: reqwest::Response, want: usize) -> Vec<(i64, String, Value)> {
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
