//! Many agents at once: every task is completed exactly once, never held by two at a time.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::Server;

const AGENTS: usize = 64;
const TASKS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_complete_a_thousand_tasks_exactly_once() {
    let server = Server::start().await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| json!({"title": format!("task {i}"), "priority": format!("P{}", i % 4)}))
        .collect();
    let (status, body) = server
        .post(&server.admin, "/tasks/batch", json!({"tasks": tasks}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        tokens.push(server.agent(&format!("agent-{i}"), &[]).await);
    }
    let server = std::sync::Arc::new(server);
    let mut workers = Vec::new();
    for token in tokens {
        let server = server.clone();
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let (status, claim) = server.post(&token, "/claims/next", json!({})).await;
                if status == StatusCode::NO_CONTENT {
                    return done;
                }
                assert_eq!(status, StatusCode::OK, "{claim}");
                let id = claim["task"]["id"].as_i64().unwrap();
                let fence = claim["lease"]["fence"].as_i64().unwrap();
                let (status, body) = server
                    .post(
                        &token,
                        &format!("/tasks/{id}/complete"),
                        json!({"fence": fence, "summary": "done"}),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                done.push(id);
            }
        }));
    }
    let mut completed: HashMap<i64, usize> = HashMap::new();
    for worker in workers {
        for id in worker.await.unwrap() {
            *completed.entry(id).or_default() += 1;
        }
    }
    assert_eq!(completed.len(), TASKS, "every task was completed");
    assert!(completed.values().all(|n| *n == 1), "no task was completed twice");

    let all = server.all_tasks().await;
    assert_eq!(all.len(), TASKS);
    assert!(all
        .iter()
        .all(|t| t["status"] == "completed" && t["attempts"] == 1));

    // The event log: per task, a claim is always followed by its completion before any other claim.
    let mut holder: HashMap<i64, String> = HashMap::new();
    let mut claims = 0;
    for event in server.all_events().await {
        let Some(task) = event.task_id else { continue };
        match event.kind().as_str() {
            "task.claimed" => {
                claims += 1;
                let who = event.data()["holder"].as_str().unwrap().to_string();
                assert!(
                    holder.insert(task, who).is_none(),
                    "task #{task} claimed while held"
                );
            }
            "task.completed" => {
                let was = holder.remove(&task).expect("completed while not held");
                assert_eq!(event.data()["holder"].as_str().unwrap(), was);
            }
            "task.released" | "task.lease_expired" | "task.failed" => panic!("unexpected {}", event.kind()),
            _ => {}
        }
    }
    assert_eq!(claims, TASKS);
    assert!(holder.is_empty());
}
