//! Leases and fencing: stale fences are refused, expired leases come back, attempts are counted.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::Server;

/// Sleeps until the lease in `claim` has certainly expired (server and test share a clock).
pub(crate) async fn outlive(claim: &Value) {
    let expires =
        chrono::DateTime::parse_from_rfc3339(claim["lease"]["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(left.max(0) as u64 + 50)).await;
}

#[tokio::test]
async fn stale_fence_after_takeover_is_refused_and_changes_nothing() {
    let server = Server::start().await;
    let a = server.agent("a", &[]).await;
    let b = server.agent("b", &[]).await;
    let task = server.task(json!({"title": "contested"})).await;
    let id = task["id"].as_i64().unwrap();

    let (status, first) = server
        .post(&a, &format!("/tasks/{id}/claim"), json!({"lease_seconds": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["lease"]["holder"], "a");
    let (status, body) = server.post(&b, &format!("/tasks/{id}/claim"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_claimed"))
    );
    assert_eq!(body["holder"], "a");

    outlive(&first).await;
    let (status, second) = server.post(&b, &format!("/tasks/{id}/claim"), json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an expired lease is reclaimable at once: {second}"
    );
    assert_eq!(
        second["lease"]["fence"].as_i64().unwrap(),
        first["lease"]["fence"].as_i64().unwrap() + 1
    );

    let old = first["lease"]["fence"].clone();
    let (_, before) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    let (status, body) = server
        .post(
            &a,
            &format!("/tasks/{id}/progress"),
            json!({"fence": old, "percent": 90}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("lease_lost")),
        "{body}"
    );
    let (status, body) = server
        .post(
            &a,
            &format!("/tasks/{id}/complete"),
            json!({"fence": old, "summary": "mine"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("lease_lost")),
        "{body}"
    );
    let (_, after) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    assert_eq!(before["status"], after["status"]);
    assert_eq!(before["lease"], after["lease"]);
    assert_eq!(before["progress"], after["progress"]);
    assert_eq!(after["lease"]["holder"], "b");

    let kinds: Vec<String> = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"task.lease_expired".to_string()), "{kinds:?}");

    let fence = second["lease"]["fence"].clone();
    let (status, done) = server
        .post(
            &b,
            &format!("/tasks/{id}/complete"),
            json!({"fence": fence, "summary": "done"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"]["summary"], "done");
}

#[tokio::test]
async fn progress_extends_the_lease_and_reaper_returns_expired_work() {
    let server = Server::start().await;
    let a = server.agent("a", &[]).await;
    let task = server.task(json!({"title": "t"})).await;
    let id = task["id"].as_i64().unwrap();
    let (_, claim) = server
        .post(&a, &format!("/tasks/{id}/claim"), json!({"lease_seconds": 1}))
        .await;
    let fence = claim["lease"]["fence"].clone();
    let (status, t) = server
        .post(
            &a,
            &format!("/tasks/{id}/progress"),
            json!({"fence": fence, "lease_seconds": 600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(t["lease"]["expires_at"].as_str().unwrap() > claim["lease"]["expires_at"].as_str().unwrap());
    assert_eq!(
        server.app_store.reap_expired_leases().await.unwrap(),
        0,
        "a renewed lease is not reaped"
    );

    let (_, t) = server
        .post(
            &a,
            &format!("/tasks/{id}/progress"),
            json!({"fence": fence, "lease_seconds": 1}),
        )
        .await;
    outlive(&json!({"lease": t["lease"]})).await;
    assert_eq!(server.app_store.reap_expired_leases().await.unwrap(), 1);
    let (_, t) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    assert_eq!(t["status"], "available");
    assert!(t["lease"].is_null());
}

#[tokio::test]
async fn retryable_failures_use_up_attempts_then_fail() {
    let server = Server::start().await;
    let a = server.agent("a", &[]).await;
    let task = server.task(json!({"title": "flaky", "max_attempts": 2})).await;
    let id = task["id"].as_i64().unwrap();

    let (_, claim) = server.post(&a, &format!("/tasks/{id}/claim"), json!({})).await;
    let (status, t) = server
        .post(
            &a,
            &format!("/tasks/{id}/fail"),
            json!({"fence": claim["lease"]["fence"], "reason": "tests broke"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["status"], "available", "retryable with attempts left");
    assert_eq!(t["attempts"], 1);

    let (_, claim) = server.post(&a, &format!("/tasks/{id}/claim"), json!({})).await;
    let (_, t) = server
        .post(
            &a,
            &format!("/tasks/{id}/fail"),
            json!({"fence": claim["lease"]["fence"], "reason": "still broken"}),
        )
        .await;
    assert_eq!(t["status"], "failed", "attempts used up");
    assert!(t["status_reason"].as_str().unwrap().contains("attempts"));

    let (status, body) = server.post(&a, &format!("/tasks/{id}/claim"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_ready"))
    );
}

#[tokio::test]
async fn backoff_delays_the_retry() {
    let server = Server::start_with(|c| c.server.retry_backoff_seconds = 600).await;
    let a = server.agent("a", &[]).await;
    let task = server.task(json!({"title": "later"})).await;
    let id = task["id"].as_i64().unwrap();
    let (_, claim) = server.post(&a, &format!("/tasks/{id}/claim"), json!({})).await;
    let (_, t) = server
        .post(
            &a,
            &format!("/tasks/{id}/fail"),
            json!({"fence": claim["lease"]["fence"], "reason": "x"}),
        )
        .await;
    assert_eq!(t["status"], "available");
    assert!(t["not_before"].is_string());
    let (status, _) = server.post(&a, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "not claimable during the backoff");
    let (status, body) = server.post(&a, &format!("/tasks/{id}/claim"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_ready"))
    );
    let (_, why) = server.get(&a, &format!("/tasks/{id}/why")).await;
    assert_eq!(why["claimable"], false);
    assert!(
        why["reasons"][0].as_str().unwrap().contains("backing off"),
        "{why}"
    );
}

#[tokio::test]
async fn release_and_block_give_the_attempt_back() {
    let server = Server::start().await;
    let a = server.agent("a", &[]).await;
    let task = server.task(json!({"title": "t"})).await;
    let id = task["id"].as_i64().unwrap();
    let (_, claim) = server.post(&a, &format!("/tasks/{id}/claim"), json!({})).await;
    let (_, t) = server
        .post(
            &a,
            &format!("/tasks/{id}/release"),
            json!({"fence": claim["lease"]["fence"], "note": "not mine"}),
        )
        .await;
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_i64()),
        (Some("available"), Some(0))
    );

    let (_, claim) = server.post(&a, &format!("/tasks/{id}/claim"), json!({})).await;
    let (_, t) = server
        .post(
            &a,
            &format!("/tasks/{id}/block"),
            json!({"fence": claim["lease"]["fence"], "reason": "which database?"}),
        )
        .await;
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_i64()),
        (Some("blocked"), Some(0))
    );
    assert_eq!(t["status_reason"], "which database?");

    let (status, body) = server.post(&a, &format!("/tasks/{id}/unblock"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "agents cannot lift blocks"
    );
    let (status, t) = server
        .post(
            &server.admin,
            &format!("/tasks/{id}/unblock"),
            json!({"note": "use sqlite"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["status"], "available");
}

#[tokio::test]
async fn claim_next_matches_capabilities_then_priority_then_age() {
    let server = Server::start().await;
    let rust = server.agent("rusty", &["rust", "backend"]).await;
    let plain = server.agent("plain", &[]).await;
    let low = server.task(json!({"title": "low", "priority": "P3"})).await;
    let needs_go = server
        .task(json!({"title": "go", "priority": "P0", "capabilities": ["go"]}))
        .await;
    let high_old = server
        .task(json!({"title": "high old", "priority": "P1", "capabilities": ["rust"]}))
        .await;
    let high_new = server
        .task(json!({"title": "high new", "priority": "high"}))
        .await;
    let strategic = server
        .task(json!({"title": "decide", "priority": "P0", "kind": "strategic"}))
        .await;

    let next = |token: String| {
        let server = &server;
        async move {
            let (status, claim) = server.post(&token, "/claims/next", json!({})).await;
            (status, claim["task"]["id"].as_i64())
        }
    };
    assert_eq!(
        next(rust.clone()).await,
        (StatusCode::OK, high_old["id"].as_i64())
    );
    assert_eq!(
        next(plain.clone()).await,
        (StatusCode::OK, high_new["id"].as_i64()),
        "plain lacks rust"
    );
    assert_eq!(next(plain.clone()).await, (StatusCode::OK, low["id"].as_i64()));
    assert_eq!(
        next(plain.clone()).await.0,
        StatusCode::NO_CONTENT,
        "go and strategic work stay"
    );
    let (_, t) = server
        .get(&server.admin, &format!("/tasks/{}", needs_go["id"]))
        .await;
    assert_eq!(t["status"], "available");
    let (status, body) = server
        .post(&plain, &format!("/tasks/{}/claim", strategic["id"]), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "strategic work is for people"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_work_created_during_the_wait() {
    let server = std::sync::Arc::new(Server::start().await);
    let a = server.agent("a", &[]).await;
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (status, claim) = server.post(&a, "/claims/next", json!({"wait_seconds": 60})).await;
            (status, claim, started.elapsed())
        })
    };
    // Give the poll a moment to start waiting; the outcome does not depend on it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let task = server.task(json!({"title": "fresh work"})).await;
    let (status, claim, elapsed) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claim["task"]["id"], task["id"]);
    // Woken by the new task, not by the 60-second deadline (a very loose bound on purpose).
    assert!(elapsed < Duration::from_secs(50), "{elapsed:?}");
}
