//! Long polls are woken only by work they could take: one waiter per new task, first come
//! first served, so thousands of waiting agents cost an unrelated create nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::notify::eventually;
use crate::support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_wakes_one_waiter_that_can_take_it_and_no_other() {
    let server = Server::start().await;
    let mut polls = Vec::new();
    for i in 0..20 {
        let token = server.agent(&format!("waiter-{i}"), &["rust"]).await;
        let url = format!("{}/api/v1/claims/next", server.url);
        polls.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"wait_seconds": 60, "projects": ["mine"]}))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.text().await.unwrap())
        }));
        // One at a time, so the first in line is known.
        eventually(|| async { (server.app_store.bus().work_waiters() == i + 1).then_some(()) }).await;
    }
    let before = server.app_store.bus().claim_next_attempts();
    // Work none of them may take: another project, capabilities they lack, work for people.
    server
        .task(json!({"title": "elsewhere", "project": "theirs"}))
        .await;
    server
        .task(json!({"title": "needs go", "project": "mine", "capabilities": ["go"]}))
        .await;
    server
        .task(json!({"title": "a decision", "project": "mine", "kind": "strategic"}))
        .await;
    // Work for them: exactly one of them takes it, the first in line, after one attempt.
    let task = server.task(json!({"title": "for us", "project": "mine"})).await;
    let (status, body) = polls.remove(0).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!("\"id\":{}", task["id"])), "{body}");
    assert_eq!(
        server.app_store.bus().claim_next_attempts() - before,
        1,
        "one claim attempt for one new task, none for work nobody waiting could take"
    );
    assert_eq!(server.app_store.bus().work_waiters(), 19, "the others still wait");
    for poll in polls {
        poll.abort();
    }
}
