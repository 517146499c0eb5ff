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

/// Claims, completions and refusals sent all at once, which the registry may do together, are
/// each answered as they would be one at a time: right fences complete, stale ones and someone
/// else's are refused, a task completed twice at once is completed once, and claimers that want
/// different work get only work they can take, each task once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_sent_at_once_are_each_answered_as_if_alone() {
    let server = Server::start().await;
    let mut tasks: Vec<_> = (0..40)
        .map(|i| json!({"title": format!("plain {i}"), "priority": "P2"}))
        .collect();
    tasks.extend(
        (0..4).map(|i| json!({"title": format!("gpu {i}"), "priority": "P1", "capabilities": ["gpu"]})),
    );
    let (status, body) = server
        .post(&server.admin, "/tasks/batch", json!({"tasks": tasks}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // 24 holders take a plain task each, one after another.
    let mut held = Vec::new();
    for i in 0..24 {
        let token = server.agent(&format!("holder-{i}"), &[]).await;
        let (status, claim) = server.post(&token, "/claims/next", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{claim}");
        let (id, fence) = (
            claim["task"]["id"].as_i64().unwrap(),
            claim["lease"]["fence"].as_i64().unwrap(),
        );
        held.push((token, id, fence));
    }
    let other = server.agent("other", &[]).await;
    let plain: Vec<_> = (0..20).map(|i| format!("plain-{i}")).collect();
    let gpu: Vec<_> = (0..6).map(|i| format!("gpu-{i}")).collect();
    let mut claimers = Vec::new();
    for name in &plain {
        claimers.push((name.clone(), server.agent(name, &[]).await));
    }
    for name in &gpu {
        claimers.push((name.clone(), server.agent(name, &["gpu"]).await));
    }

    // Everything at once. Each completion: (task, token, fence sent).
    let complete = |token: &str, id: i64, fence: i64| {
        let (server, token) = (&server, token.to_string());
        async move {
            let path = format!("/tasks/{id}/complete");
            server
                .post(&token, &path, json!({"fence": fence, "summary": "done"}))
                .await
        }
    };
    let mut completions = Vec::new();
    for (i, (token, id, fence)) in held.iter().enumerate() {
        let (id, fence) = (*id, *fence);
        match i {
            0..=7 => completions.push(complete(token, id, fence)),
            8..=11 => completions.push(complete(token, id, fence + 1)),
            12..=15 => {
                completions.push(complete(token, id, fence));
                completions.push(complete(token, id, fence));
            }
            16..=19 => completions.push(complete(&other, id, fence)),
            20..=21 => completions.push(complete(&server.admin, id, fence)),
            _ => {}
        }
    }
    let claims = claimers.iter().map(|(name, token)| {
        let (server, name, token) = (&server, name.clone(), token.clone());
        async move { (name, server.post(&token, "/claims/next", json!({})).await) }
    });
    let (completed, claimed) = tokio::join!(
        futures::future::join_all(completions),
        futures::future::join_all(claims)
    );

    let codes: Vec<(StatusCode, Option<&str>)> = completed
        .iter()
        .map(|(status, body)| (*status, body["code"].as_str()))
        .collect();
    let done = (StatusCode::OK, None);
    let lost = (StatusCode::CONFLICT, Some("lease_lost"));
    let forbidden = (StatusCode::FORBIDDEN, Some("forbidden"));
    assert_eq!(codes[0..8], [done; 8], "{completed:?}");
    assert_eq!(codes[8..12], [lost; 4], "{completed:?}");
    for pair in codes[12..20].chunks(2) {
        let mut pair = pair.to_vec();
        pair.sort();
        assert_eq!(
            pair,
            [done, lost],
            "one of two completions at once wins: {completed:?}"
        );
    }
    assert_eq!(codes[20..24], [forbidden; 4], "{completed:?}");
    assert_eq!(codes[24..26], [done; 2], "{completed:?}");

    // Every ready task went to one claimer that can take it; the rest heard there was none.
    let mut taken = HashMap::new();
    for (name, (status, claim)) in &claimed {
        match *status {
            StatusCode::NO_CONTENT => continue,
            StatusCode::OK => {}
            other => panic!("{name}: {other} {claim}"),
        }
        let title = claim["task"]["title"].as_str().unwrap();
        assert!(
            name.starts_with("gpu") || title.starts_with("plain"),
            "{name} was handed {title}"
        );
        assert_eq!(claim["lease"]["holder"], name.as_str());
        let id = claim["task"]["id"].as_i64().unwrap();
        assert!(
            taken.insert(id, name.clone()).is_none(),
            "task #{id} handed out twice"
        );
    }
    assert_eq!(
        taken.len(),
        20,
        "16 plain and 4 gpu tasks were ready: {claimed:?}"
    );

    // The registry agrees with every answer.
    let completed_ids: Vec<i64> = held
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i, 0..=7 | 12..=15 | 20..=21))
        .map(|(_, (_, id, _))| *id)
        .collect();
    for task in server.all_tasks().await {
        let id = task["id"].as_i64().unwrap();
        let status = task["status"].as_str().unwrap();
        if completed_ids.contains(&id) {
            assert_eq!(status, "completed", "{task}");
        } else if let Some(name) = taken.get(&id) {
            assert_eq!(
                (status, task["lease"]["holder"].as_str()),
                ("in_progress", Some(name.as_str()))
            );
        } else {
            let holder = held
                .iter()
                .position(|(_, held, _)| *held == id)
                .map(|i| format!("holder-{i}"));
            assert_eq!(
                (status, task["lease"]["holder"].as_str()),
                ("in_progress", holder.as_deref()),
                "{task}"
            );
        }
    }
    let mut completions_logged = 0;
    for event in server.all_events().await {
        if event.kind() == "task.completed" {
            completions_logged += 1;
            let id = event.task_id.unwrap();
            assert!(completed_ids.contains(&id), "task #{id} completed");
        }
    }
    assert_eq!(
        completions_logged,
        completed_ids.len(),
        "each completion logged once"
    );
}
