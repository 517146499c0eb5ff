//! Who may cancel: an admin always; an agent only a subtree whose every unfinished task it
//! created and in which nobody else holds a live lease. One test per clause, each also checking
//! that a refused cancel changed nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskyard::domain::Role;

use crate::support::Server;

/// Creates a task as `token` (optionally under `parent`) and returns its id.
async fn create(server: &Server, token: &str, title: &str, parent: Option<i64>) -> i64 {
    let (status, task) = server
        .post(token, "/tasks", json!({"title": title, "parent_id": parent}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    task["id"].as_i64().unwrap()
}

async fn claim(server: &Server, token: &str, id: i64, body: Value) -> Value {
    let (status, claim) = server.post(token, &format!("/tasks/{id}/claim"), body).await;
    assert_eq!(status, StatusCode::OK, "{claim}");
    claim
}

async fn cancel(server: &Server, token: &str, id: i64) -> (StatusCode, Value) {
    server
        .post(token, &format!("/tasks/{id}/cancel"), json!({}))
        .await
}

async fn status_of(server: &Server, id: i64) -> String {
    let (_, task) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    task["status"].as_str().unwrap().to_string()
}

/// A refusal is `403 forbidden` naming `reason`, and every task keeps its status.
async fn refused(
    server: &Server,
    (status, body): (StatusCode, Value),
    reason: &str,
    unchanged: &[(i64, &str)],
) {
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains(reason), "{body}");
    for (id, want) in unchanged {
        assert_eq!(status_of(server, *id).await, *want, "task #{id} was left alone");
    }
}

#[tokio::test]
async fn an_agent_cannot_cancel_a_task_another_created() {
    let server = Server::start().await;
    let alice = server.agent("alice", &[]).await;
    let bob = server.agent("bob", &[]).await;
    let root = create(&server, &alice, "alice's", None).await;
    refused(
        &server,
        cancel(&server, &bob, root).await,
        "created by alice",
        &[(root, "available")],
    )
    .await;
}

#[tokio::test]
async fn an_agent_cannot_cancel_a_subtree_holding_a_subtask_another_created() {
    let server = Server::start().await;
    let alice = server.agent("alice", &[]).await;
    let bob = server.agent("bob", &[]).await;
    let root = create(&server, &alice, "alice's", None).await;
    let mine = create(&server, &alice, "alice's part", Some(root)).await;
    let theirs = create(&server, &bob, "bob's part", Some(mine)).await;
    refused(
        &server,
        cancel(&server, &alice, root).await,
        &format!("#{theirs} was created by bob"),
        &[(root, "available"), (mine, "available"), (theirs, "available")],
    )
    .await;
}

#[tokio::test]
async fn an_agent_cannot_cancel_a_subtree_in_which_another_holds_a_lease() {
    let server = Server::start().await;
    let alice = server.agent("alice", &[]).await;
    let bob = server.agent("bob", &[]).await;
    // The case: alice's task, held by bob.
    let root = create(&server, &alice, "alice's", None).await;
    claim(&server, &bob, root, json!({})).await;
    refused(
        &server,
        cancel(&server, &alice, root).await,
        &format!("#{root} is held by bob"),
        &[(root, "in_progress")],
    )
    .await;

    // A lease deeper down counts as much, until it is no longer live.
    let other = create(&server, &alice, "alice's other", None).await;
    let part = create(&server, &alice, "alice's part", Some(other)).await;
    claim(&server, &bob, part, json!({"lease_seconds": 1})).await;
    refused(
        &server,
        cancel(&server, &alice, other).await,
        &format!("#{part} is held by bob"),
        &[(other, "available"), (part, "in_progress")],
    )
    .await;
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let (_, why) = server.get(&server.admin, &format!("/tasks/{part}/why")).await;
            if why["reasons"][0].as_str().unwrap_or("").contains("expired") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("bob's one-second lease ran out");
    let (status, body) = cancel(&server, &alice, other).await;
    assert_eq!(status, StatusCode::OK, "an expired lease holds nothing: {body}");
    assert_eq!(status_of(&server, part).await, "cancelled");
}

#[tokio::test]
async fn an_agent_may_cancel_what_it_created_and_holds_and_finished_work_is_kept() {
    let server = Server::start().await;
    let alice = server.agent("alice", &[]).await;
    let bob = server.agent("bob", &[]).await;
    let root = create(&server, &alice, "alice's", None).await;
    let part = create(&server, &alice, "alice's part", Some(root)).await;
    // Bob's finished subtask is not unfinished work: it neither blocks the cancel nor changes.
    let done = create(&server, &bob, "bob's finished part", Some(root)).await;
    let held = claim(&server, &bob, done, json!({})).await;
    let (status, _) = server
        .post(
            &bob,
            &format!("/tasks/{done}/complete"),
            json!({"fence": held["lease"]["fence"], "summary": "ok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    claim(&server, &alice, part, json!({})).await;
    let (status, body) = cancel(&server, &alice, root).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(status_of(&server, root).await, "cancelled");
    assert_eq!(status_of(&server, part).await, "cancelled");
    assert_eq!(status_of(&server, done).await, "completed");
}

#[tokio::test]
async fn an_admin_may_always_cancel() {
    let server = Server::start().await;
    let alice = server.agent("alice", &[]).await;
    let bob = server.agent("bob", &[]).await;
    let root = create(&server, &alice, "alice's", None).await;
    let part = create(&server, &bob, "bob's part", Some(root)).await;
    claim(&server, &bob, part, json!({})).await;
    let (status, body) = cancel(&server, &server.admin, root).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(status_of(&server, part).await, "cancelled");
}

#[tokio::test]
async fn a_run_token_cancels_only_subtasks_it_created_within_its_scope() {
    let server = Server::start().await;
    let task = server.task(json!({"title": "the run's task"})).await;
    let task = task["id"].as_i64().unwrap();
    let outside = server.task(json!({"title": "elsewhere"})).await;
    let outside = outside["id"].as_i64().unwrap();
    let token = taskyard::token::new_token();
    server
        .app_store
        .rotate_agent_token(
            "run-1",
            "spawned",
            Role::Agent,
            &hex::encode(taskyard::token::hash_token(&token)),
            Some(task),
        )
        .await
        .unwrap();
    claim(&server, &token, task, json!({})).await;
    let sub = create(&server, &token, "a part", Some(task)).await;
    let (status, body) = cancel(&server, &token, sub).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    refused(
        &server,
        cancel(&server, &token, task).await,
        "created by admin",
        &[(task, "in_progress")],
    )
    .await;
    refused(
        &server,
        cancel(&server, &token, outside).await,
        &format!("task #{task} and its subtasks"),
        &[(outside, "available")],
    )
    .await;
}
