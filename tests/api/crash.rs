//! Crash safety: agents work tasks over HTTP while the server is SIGKILLed at random moments,
//! twenty times, and restarted on the same data folder. Afterwards no task is lost or
//! duplicated, every completion a client was told about happened exactly once, and the event
//! log agrees with every task's state.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use taskyard::domain::Status;

use crate::support::{event_kinds_by_task, open_store, serve_child, ADMIN_TOKEN};

const KILLS: usize = 20;
const TASKS: usize = 2_000;
const AGENTS: usize = 6;

/// A `taskyard serve` child on `data` with no loops, answering on a fresh port.
async fn serve(data: &Path) -> (tokio::process::Child, String) {
    let loops = data.join("no-loops");
    std::fs::create_dir_all(&loops).unwrap();
    serve_child(data, &loops, &[]).await
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    body: Value,
) -> Option<(StatusCode, Value)> {
    let resp = http
        .post(format!("{url}/api/v1{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// One agent: claim-next, progress, complete, until the server goes away. Records every
/// completion the server confirmed.
async fn work(url: String, token: String, confirmed: Arc<Mutex<Vec<i64>>>) {
    let http = reqwest::Client::new();
    loop {
        let Some((status, claim)) =
            post(&http, &url, &token, "/claims/next", json!({"lease_seconds": 2})).await
        else {
            return;
        };
        if status == StatusCode::NO_CONTENT {
            return;
        }
        if status != StatusCode::OK {
            continue;
        }
        let id = claim["task"]["id"].as_i64().unwrap();
        let fence = claim["lease"]["fence"].clone();
        let path = format!("/tasks/{id}/progress");
        if post(&http, &url, &token, &path, json!({"fence": fence, "percent": 50}))
            .await
            .is_none()
        {
            return;
        }
        // Some work fails (to be retried) or is handed back, so more transitions are exercised.
        let (path, body) = match id % 13 {
            0 => (
                format!("/tasks/{id}/fail"),
                json!({"fence": fence, "reason": "flaky", "retryable": true}),
            ),
            7 => (format!("/tasks/{id}/release"), json!({"fence": fence})),
            _ => (
                format!("/tasks/{id}/complete"),
                json!({"fence": fence, "summary": "done"}),
            ),
        };
        let completes = path.ends_with("/complete");
        match post(&http, &url, &token, &path, body).await {
            Some((StatusCode::OK, _)) if completes => confirmed.lock().unwrap().push(id),
            Some(_) => {}
            None => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_under_load_lose_nothing_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, mut url) = serve(&data).await;
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        let (status, body) = post(
            &http,
            &url,
            ADMIN_TOKEN,
            "/agents",
            json!({"name": format!("agent-{i}")}),
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_string());
    }
    let tasks: Vec<Value> = (0..TASKS)
        .map(|i| json!({"title": format!("task {i}"), "key": format!("k{i}"), "max_attempts": 100}))
        .collect();
    for batch in tasks.chunks(1000) {
        let (status, body) = post(&http, &url, ADMIN_TOKEN, "/tasks/batch", json!({"tasks": batch}))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let confirmed = Arc::new(Mutex::new(Vec::new()));
    for round in 0..KILLS {
        if round > 0 {
            (child, url) = serve(&data).await;
        }
        let agents: Vec<_> = tokens
            .iter()
            .map(|t| tokio::spawn(work(url.clone(), t.clone(), confirmed.clone())))
            .collect();
        // Any moment must be safe: kill after a random slice of work.
        let pause = rand::thread_rng().gen_range(20..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for agent in agents {
            agent.await.unwrap();
        }
    }

    // Check the registry itself, as the server would find it on the next start.
    // (It opens at all after 20 kills, or this fails.)
    let store = open_store(&data).await;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let key = taskyard::domain::TaskRef::parse(&format!("k{i}"));
        tasks.push(store.task(&key).await.expect("no task is lost"));
    }
    let ids: HashSet<i64> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), TASKS, "no task is duplicated");
    let events = event_kinds_by_task(&store).await;
    let confirmed: HashSet<i64> = confirmed.lock().unwrap().iter().copied().collect();
    for task in &tasks {
        let kinds = events.get(&task.id).cloned().unwrap_or_default();
        let count = |kind: &str| kinds.iter().filter(|k| k.as_str() == kind).count();
        let claims = count("task.claimed") as i64;
        assert_eq!(count("task.created"), 1, "#{}: {kinds:?}", task.id);
        // Every claim bumped the fence and wrote its event in the same transaction.
        let fence = store.task_routing(task.id).await.unwrap().0;
        assert_eq!(claims, fence, "#{}: claims vs fence: {kinds:?}", task.id);
        match task.status {
            Status::Completed => {
                assert_eq!(
                    count("task.completed"),
                    1,
                    "#{}: completed exactly once: {kinds:?}",
                    task.id
                );
                assert_eq!(
                    kinds.last().map(String::as_str),
                    Some("task.completed"),
                    "#{}",
                    task.id
                );
                assert!(
                    task.result.is_some() && task.completed_at.is_some(),
                    "#{}",
                    task.id
                );
            }
            Status::InProgress => {
                assert_eq!(count("task.completed"), 0, "#{}: {kinds:?}", task.id);
                let lease = task.lease.as_ref().expect("an in-progress task has a lease");
                assert!(
                    lease.holder.starts_with("agent-"),
                    "#{}: held by {}",
                    task.id,
                    lease.holder
                );
                assert_eq!(lease.fence, fence);
            }
            Status::Available => {
                assert_eq!(count("task.completed"), 0, "#{}: {kinds:?}", task.id);
                assert!(task.lease.is_none());
            }
            other => panic!("#{} ended {other}: {kinds:?}", task.id),
        }
        if confirmed.contains(&task.id) {
            assert_eq!(
                task.status,
                Status::Completed,
                "#{}: a confirmed completion is kept",
                task.id
            );
        }
    }
    assert!(store.live_runs().await.unwrap().is_empty(), "no run is left live");
    let done = tasks.iter().filter(|t| t.status == Status::Completed).count();
    assert!(
        done >= confirmed.len(),
        "{done} completed, {} confirmed",
        confirmed.len()
    );
    println!(
        "{KILLS} kills: {done} of {TASKS} tasks completed, {} completions confirmed",
        confirmed.len()
    );
    store.close().await;
}
