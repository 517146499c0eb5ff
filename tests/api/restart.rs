//! Stopping and starting on the same data folder keeps tasks, leases and events.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{test_config, Server};

#[tokio::test]
async fn tasks_leases_and_events_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::boot(test_config(dir.path())).await;
    let agent = server.agent("a", &[]).await;
    let held = server.task(json!({"title": "held", "priority": "P0"})).await;
    let done = server.task(json!({"title": "done"})).await;
    let waiting = server
        .task(json!({"title": "waiting", "depends_on": [held["id"]]}))
        .await;
    let (_, claim) = server
        .post(
            &agent,
            &format!("/tasks/{}/claim", held["id"]),
            json!({"lease_seconds": 3600}),
        )
        .await;
    let (_, c2) = server
        .post(&agent, &format!("/tasks/{}/claim", done["id"]), json!({}))
        .await;
    server
        .post(
            &agent,
            &format!("/tasks/{}/complete", done["id"]),
            json!({"fence": c2["lease"]["fence"], "summary": "ok"}),
        )
        .await;
    let tasks_before = server.all_tasks().await;
    let events_before = server.all_events().await;
    server.stop().await;

    let server = Server::boot(test_config(dir.path())).await;
    assert_eq!(server.all_tasks().await, tasks_before, "every task as it was");
    assert_eq!(server.all_events().await, events_before, "every event as it was");
    let (status, _) = server.get(&agent, "/tasks").await;
    assert_eq!(status, StatusCode::OK, "agent tokens survive");

    let fence = claim["lease"]["fence"].clone();
    let (status, t) = server
        .post(
            &agent,
            &format!("/tasks/{}/progress", held["id"]),
            json!({"fence": fence, "percent": 50}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the lease survived: {t}");
    let (status, _) = server
        .post(
            &agent,
            &format!("/tasks/{}/complete", held["id"]),
            json!({"fence": fence, "summary": "ok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, w) = server.get(&agent, &format!("/tasks/{}", waiting["id"])).await;
    assert_eq!(w["status"], "available");
    server.stop().await;
}
