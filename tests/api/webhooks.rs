//! Outgoing webhooks against a real HTTP receiver that checks signatures, goes down and comes
//! back: every event delivered once (by delivery id), none lost across a server restart, a
//! refusal given up with its answer kept.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use taskyard::config::{Config, WebhookConfig, WebhookFormat};

use crate::support::{test_config, Server};

/// The signing secret's variable: one cargo sets for every test process. (Setting a variable
/// here would race other threads' reads of the environment.)
const SECRET_ENV: &str = "CARGO_MANIFEST_DIR";

fn secret() -> String {
    std::env::var(SECRET_ENV).expect("cargo sets CARGO_MANIFEST_DIR for tests")
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Signed deliveries taken, by delivery id (each id once; repeats counted apart).
    taken: BTreeMap<i64, Value>,
    repeats: usize,
    bad_signatures: usize,
    refused: Vec<Value>,
    /// Answers 503 while true.
    down: AtomicBool,
}

type Receiver = Arc<Mutex<Seen>>;

fn verified(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers.get("taskyard-signature").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = header.split(',');
    let (Some(t), Some(v1)) = (
        parts.next().and_then(|p| p.strip_prefix("t=")),
        parts.next().and_then(|p| p.strip_prefix("v1=")),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret().as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap_or(0);
    hex::decode(v1).is_ok_and(|sig| mac.verify_slice(&sig).is_ok()) && (0..300).contains(&age)
}

async fn hook(State(seen): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let mut seen = seen.lock().unwrap();
    if seen.down.load(Ordering::SeqCst) {
        return AxumStatus::SERVICE_UNAVAILABLE;
    }
    if !verified(&headers, &body) {
        seen.bad_signatures += 1;
        return AxumStatus::UNAUTHORIZED;
    }
    let id: i64 = headers["taskyard-delivery"].to_str().unwrap().parse().unwrap();
    let event: Value = serde_json::from_slice(&body).unwrap();
    if seen.taken.insert(id, event).is_some() {
        seen.repeats += 1;
    }
    AxumStatus::OK
}

async fn reject(State(seen): State<Receiver>, body: Bytes) -> (AxumStatus, &'static str) {
    seen.lock()
        .unwrap()
        .refused
        .push(serde_json::from_slice(&body).unwrap());
    (AxumStatus::BAD_REQUEST, "nope, not this one")
}

async fn receiver() -> (String, Receiver) {
    let seen = Receiver::default();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .route("/reject", post(reject))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn with_hooks(config: &mut Config, url: &str) {
    config.webhooks = vec![
        WebhookConfig {
            name: Some("shop".into()),
            url: format!("{url}/hook"),
            events: vec!["task.*".into()],
            secret_env: Some(SECRET_ENV.into()),
            projects: Some(vec!["shop".into()]),
            format: WebhookFormat::Json,
        },
        WebhookConfig {
            name: None,
            url: format!("{url}/reject"),
            events: vec!["task.completed".into()],
            secret_env: None,
            projects: None,
            format: WebhookFormat::Slack,
        },
    ];
}

/// Waits (up to a minute) until `done` holds of what the receiver saw.
async fn until(seen: &Receiver, what: &str, done: impl Fn(&Seen) -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !done(&seen.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the receiver never saw {what}"));
}

async fn deliveries(server: &Server, query: &str) -> Vec<Value> {
    let (status, page) = server
        .get(&server.admin, &format!("/webhooks/deliveries{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// The ids of the events of shop tasks, as the server's log has them.
async fn shop_task_events(server: &Server, shop: &BTreeSet<i64>) -> BTreeSet<i64> {
    server
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.kind().starts_with("task.") && e.task_id.is_some_and(|id| shop.contains(&id)))
        .map(|e| e.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_once_signed_through_outages_and_restarts() {
    let (url, seen) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let boot = || {
        let mut config = test_config(dir.path());
        with_hooks(&mut config, &url);
        Server::boot(config)
    };
    let server = boot().await;
    let worker = server.agent("worker", &[]).await;
    let mut shop = BTreeSet::new();

    // Work in two projects: only the shop's task events go to the signed webhook.
    let id = server.task(json!({"title": "sell", "project": "shop"})).await["id"]
        .as_i64()
        .unwrap();
    shop.insert(id);
    server
        .task(json!({"title": "elsewhere", "project": "other"}))
        .await;
    let (_, claim) = server
        .post(&worker, &format!("/tasks/{id}/claim"), json!({}))
        .await;
    let (status, _) = server
        .post(
            &worker,
            &format!("/tasks/{id}/complete"),
            json!({"fence": claim["lease"]["fence"], "summary": "sold"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    until(&seen, "the first three events", |s| s.taken.len() == 3).await;
    let first: Vec<String> = seen
        .lock()
        .unwrap()
        .taken
        .values()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(first, ["task.created", "task.claimed", "task.completed"]);

    // The receiver goes down: attempts fail with 503 and are retried once it is back.
    seen.lock().unwrap().down.store(true, Ordering::SeqCst);
    let id = server
        .task(json!({"title": "while down", "project": "shop"}))
        .await["id"]
        .as_i64()
        .unwrap();
    shop.insert(id);
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let queued = deliveries(&server, "?status=queued").await;
            if queued
                .iter()
                .any(|d| d["last_status"] == 503 && d["attempts"].as_i64() >= Some(1))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a delivery was attempted while the receiver was down");
    seen.lock().unwrap().down.store(false, Ordering::SeqCst);
    until(&seen, "the event sent while it was down", |s| s.taken.len() == 4).await;

    // Down again, and the server restarts before it could deliver: nothing is lost.
    seen.lock().unwrap().down.store(true, Ordering::SeqCst);
    for title in ["across", "a restart"] {
        let id = server.task(json!({"title": title, "project": "shop"})).await["id"]
            .as_i64()
            .unwrap();
        shop.insert(id);
    }
    server.stop().await;
    seen.lock().unwrap().down.store(false, Ordering::SeqCst);
    let server = boot().await;
    until(&seen, "the events from before the restart", |s| {
        s.taken.len() == 6
    })
    .await;

    // Exactly the shop's task events, each under one delivery id, every signature good.
    let expected = shop_task_events(&server, &shop).await;
    let (delivered, ids, bad, repeats) = {
        let seen = seen.lock().unwrap();
        let delivered: BTreeSet<i64> = seen.taken.values().map(|e| e["id"].as_i64().unwrap()).collect();
        (delivered, seen.taken.len(), seen.bad_signatures, seen.repeats)
    };
    assert_eq!(delivered, expected);
    assert_eq!(ids, expected.len(), "one delivery id per event");
    assert_eq!(bad, 0);
    // No attempt was taken and then lost its acknowledgement here, so no id came twice.
    assert_eq!(repeats, 0);
    // Each answer is recorded a moment after the receiver gave it.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let all = deliveries(&server, "?status=delivered").await;
            if all.iter().filter(|d| d["webhook"] == "shop").count() == 6 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every shop delivery is recorded as delivered");

    // The refusing receiver: given up after one attempt, its answer kept; Slack-style body.
    let refused = deliveries(&server, "?status=failed").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["webhook"], "webhook-2");
    assert_eq!(
        (
            refused[0]["attempts"].as_i64(),
            refused[0]["last_status"].as_i64()
        ),
        (Some(1), Some(400))
    );
    assert!(
        refused[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("nope, not this one"),
        "{refused:?}"
    );
    let text = seen.lock().unwrap().refused[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with("taskyard: task.completed on task #") && text.ends_with("by worker"),
        "{text}"
    );

    let (status, body) = server
        .get(&server.admin, "/webhooks/deliveries?status=lost")
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_input"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_configured_later_starts_from_that_moment() {
    let (url, seen) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    // A registry with history, and no webhook.
    let server = Server::boot(test_config(dir.path())).await;
    server.task(json!({"title": "before", "project": "shop"})).await;
    server.stop().await;

    let mut config = test_config(dir.path());
    with_hooks(&mut config, &url);
    let server = Server::boot(config).await;
    let id = server.task(json!({"title": "after", "project": "shop"})).await["id"].clone();
    until(&seen, "the new task's event", |s| !s.taken.is_empty()).await;
    let taken: Vec<Value> = seen.lock().unwrap().taken.values().cloned().collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0]["task_id"], id);
    assert_eq!(deliveries(&server, "").await.len(), 1);
    let viewer = server.agent_with_role("watcher", &[], "viewer").await;
    let (status, _) = server.get(&viewer, "/webhooks/deliveries").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "webhook URLs are for admins");
    server.stop().await;
}
