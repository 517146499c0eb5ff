//! Ending an agent's access: deactivation (token dead, leases released, streams ended, a long
//! poll already waiting takes nothing), token rotation, and removing agents that never acted.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::events::read_to_end;
use crate::support::Server;

/// The agent named `name` as the admin lists it.
async fn listed(server: &Server, name: &str) -> Option<Value> {
    let (_, page) = server.get(&server.admin, "/agents?all=true").await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

async fn agent_id(server: &Server, name: &str) -> i64 {
    listed(server, name).await.expect("the agent is listed")["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivating_an_agent_ends_its_token_leases_streams_and_waiting_claims() {
    let server = Server::start().await;
    let alice = server.agent("alice", &[]).await;
    let bob = server.agent("bob", &[]).await;
    let mut held = Vec::new();
    for title in ["one", "two"] {
        let id = server.task(json!({"title": title})).await["id"].as_i64().unwrap();
        let (status, _) = server
            .post(&alice, &format!("/tasks/{id}/claim"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        held.push(id);
    }
    let untouched = server.task(json!({"title": "bob's"})).await["id"]
        .as_i64()
        .unwrap();
    server
        .post(&bob, &format!("/tasks/{untouched}/claim"), json!({}))
        .await;

    // Alice's live event stream, and a claim-next of hers already waiting for work.
    let http = reqwest::Client::new();
    let sse = http
        .get(format!("{}/api/v1/events", server.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let waiting = {
        let (url, alice) = (server.url.clone(), alice.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/api/v1/claims/next"))
                .bearer_auth(alice)
                .json(&json!({"projects": ["later"], "wait_seconds": 60}))
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        while server.app_store.bus().work_waiters() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the claim-next waits");

    let id = agent_id(&server, "alice").await;
    let (status, _) = server
        .post(&bob, &format!("/agents/{id}/deactivate"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins deactivate");
    let (status, done) = server
        .post(&server.admin, &format!("/agents/{id}/deactivate"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["agent"]["status"], "deactivated");
    assert_eq!(done["released"], json!(held));

    // The token is dead at once, everywhere.
    let (status, body) = server.get(&alice, "/tasks").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    read_to_end(sse, "alice's event stream").await;
    // Work that fits the waiting claim-next arrives after the deactivation: it is not hers.
    let later = server.task(json!({"title": "later", "project": "later"})).await["id"]
        .as_i64()
        .unwrap();
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let (_, task) = server.get(&server.admin, &format!("/tasks/{later}")).await;
    assert_eq!(task["status"], "available", "{task}");

    // Her leases went back to the pool with an event each, attempts given back; Bob's stayed.
    for id in &held {
        let (_, task) = server.get(&server.admin, &format!("/tasks/{id}")).await;
        assert_eq!(
            (task["status"].as_str(), task["attempts"].as_i64()),
            (Some("available"), Some(0)),
            "{task}"
        );
        let released = task["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "task.released")
            .cloned()
            .expect("a task.released event");
        assert_eq!(released["data"]["holder"], "alice", "{released}");
    }
    let (_, task) = server.get(&server.admin, &format!("/tasks/{untouched}")).await;
    assert_eq!(task["lease"]["holder"], "bob");
    let deactivated = server
        .all_events()
        .await
        .into_iter()
        .find(|e| e.kind() == "agent.deactivated")
        .expect("an agent.deactivated event");
    assert_eq!(deactivated.data()["agent"], "alice");
    assert_eq!(deactivated.data()["released"], json!(held));

    // Listed as deactivated; a second deactivation, or a new token, is refused.
    assert_eq!(listed(&server, "alice").await.unwrap()["status"], "deactivated");
    for action in ["deactivate", "rotate-token"] {
        let (status, body) = server
            .post(&server.admin, &format!("/agents/{id}/{action}"), json!({}))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("conflict")),
            "{action}"
        );
    }
    let (status, body) = server
        .post(&server.admin, "/agents/99999/deactivate", json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_replaces_the_old_one_at_once() {
    let server = Server::start().await;
    let old = server.agent("carol", &["rust"]).await;
    let id = agent_id(&server, "carol").await;
    let task = server.task(json!({"title": "t"})).await["id"].as_i64().unwrap();
    let (_, claim) = server
        .post(&old, &format!("/tasks/{task}/claim"), json!({}))
        .await;

    let (status, rotated) = server
        .post(&server.admin, &format!("/agents/{id}/rotate-token"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(rotated["agent"]["capabilities"], json!(["rust"]));
    let (status, _) = server.get(&old, "/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old token is dead");
    // The same agent, lease and all: the new token completes what the old one claimed.
    let (status, done) = server
        .post(
            &new,
            &format!("/tasks/{task}/complete"),
            json!({"fence": claim["lease"]["fence"], "summary": "done"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(server
        .all_events()
        .await
        .iter()
        .any(|e| e.kind() == "agent.token_rotated" && e.data()["agent"] == "carol"));
}

async fn remove(server: &Server, token: &str, id: i64) -> (StatusCode, Value) {
    server
        .call(Some(token), Method::DELETE, &format!("/agents/{id}"), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_agents_that_never_acted_can_be_removed() {
    let server = Server::start().await;
    let idle = server.agent("idle", &[]).await;
    let busy = server.agent("busy", &[]).await;
    server.get(&idle, "/tasks").await;
    server.post(&busy, "/tasks", json!({"title": "mine"})).await;

    let busy_id = agent_id(&server, "busy").await;
    let (status, body) = remove(&server, &server.admin, busy_id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("deactivate it instead"),
        "{body}"
    );

    let idle_id = agent_id(&server, "idle").await;
    let (status, _) = remove(&server, &busy, idle_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = remove(&server, &server.admin, idle_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(listed(&server, "idle").await.is_none());
    let (status, _) = server.get(&idle, "/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = remove(&server, &server.admin, idle_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rotates_and_deactivates_by_name() {
    let server = Server::start().await;
    let old = server.agent("dave", &[]).await;
    let run = |args: &'static [&'static str]| {
        let (url, admin) = (server.url.clone(), server.admin.clone());
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
                .args(args)
                .env("TASKYARD_URL", url)
                .env("TASKYARD_TOKEN", admin)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(&["agent", "rotate", "dave"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("the new token is printed")
        .to_string();
    assert_eq!(server.get(&old, "/tasks").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.get(&new, "/tasks").await.0, StatusCode::OK);

    let out = run(&["agent", "deactivate", "dave"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("agent dave deactivated"), "{text}");
    assert_eq!(server.get(&new, "/tasks").await.0, StatusCode::UNAUTHORIZED);

    let out = run(&["agent", "deactivate", "nobody"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent named \"nobody\""));
}
