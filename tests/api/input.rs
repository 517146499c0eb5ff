//! Bad input of every kind gets the right 4xx problem and changes nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::Server;

/// Counts of tasks and events: what must not change.
async fn footprint(server: &Server) -> (usize, usize) {
    (server.all_tasks().await.len(), server.all_events().await.len())
}

async fn raw_post(server: &Server, path: &str, body: &'static str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1{path}", server.url))
        .bearer_auth(&server.admin)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_problem_and_changes_nothing() {
    let server = Server::start().await;
    let agent = server.agent("a", &[]).await;
    let existing = server.task(json!({"title": "existing", "key": "k1"})).await;
    let before = footprint(&server).await;

    let long_title = "x".repeat(501);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, "title"),
        (json!({"title": ""}), StatusCode::UNPROCESSABLE_ENTITY, "title"),
        (
            json!({"title": long_title}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
        (json!({"title": 42}), StatusCode::UNPROCESSABLE_ENTITY, "title"),
        (
            json!({"title": "t", "priority": "P7"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "priority",
        ),
        (
            json!({"title": "t", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            json!({"title": "t", "kind": "Not A Word"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "kind",
        ),
        (
            json!({"title": "t", "capabilities": "rust"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "capabilities",
        ),
        (
            json!({"title": "t", "capabilities": (0..40).map(|i| format!("c{i}")).collect::<Vec<_>>()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "capabilities",
        ),
        (
            json!({"title": "t", "depends_on": [999]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "depends_on[0]",
        ),
        (
            json!({"title": "t", "depends_on": ["no-such-key"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "depends_on[0]",
        ),
        (
            json!({"title": "t", "depends_on": [true]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "depends_on[0]",
        ),
        (
            json!({"title": "t", "parent_id": 999}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "parent_id",
        ),
        (
            json!({"title": "t", "key": "12345"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "key",
        ),
        (
            json!({"title": "t", "route": "teleport"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "route",
        ),
        (
            json!({"title": "t", "max_attempts": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_attempts",
        ),
        (
            json!({"title": "bell\u{7}"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
    ];
    for (body, want, field) in cases {
        let (status, problem) = server.post(&server.admin, "/tasks", body.clone()).await;
        assert_eq!(status, want, "{body} → {problem}");
        assert_eq!(problem["code"], "invalid_input", "{body}");
        assert_eq!(problem["field"], field, "{body} → {problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }

    let (status, problem) = raw_post(&server, "/tasks", "{\"title\": ").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
    let (status, _) = raw_post(&server, "/tasks", "[1, 2, 3]").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let huge = json!({"title": "t", "description": "y".repeat(2 * 1024 * 1024)});
    let (status, problem) = server.post(&server.admin, "/tasks", huge).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );

    let too_many: Vec<Value> = (0..1001).map(|i| json!({"title": format!("t{i}")})).collect();
    let (status, problem) = server
        .post(&server.admin, "/tasks/batch", json!({"tasks": too_many}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("tasks"))
    );
    let (status, problem) = server
        .post(
            &server.admin,
            "/tasks/batch",
            json!({"tasks": [{"title": "fine"}, {"title": "broken", "priority": "urgent!"}]}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("tasks[1].priority"))
    );

    let id = existing["id"].as_i64().unwrap();
    let (_, claim) = server
        .post(&agent, &format!("/tasks/{id}/claim"), json!({}))
        .await;
    let fence = claim["lease"]["fence"].as_i64().unwrap();
    let lease_cases: Vec<(&str, Value, &str)> = vec![
        ("progress", json!({"fence": fence, "percent": 101}), "percent"),
        ("progress", json!({"percent": 10}), "fence"),
        ("progress", json!({"fence": "one"}), "fence"),
        ("complete", json!({"fence": fence}), "summary"),
        (
            "complete",
            json!({"fence": fence, "summary": "s", "deliverables": [{"kind": "commit"}]}),
            "deliverables[0].ref",
        ),
        ("fail", json!({"fence": fence, "reason": ""}), "reason"),
    ];
    let after_claim = footprint(&server).await;
    for (action, body, field) in lease_cases {
        let (status, problem) = server
            .post(&agent, &format!("/tasks/{id}/{action}"), body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{action} {body} → {problem}"
        );
        assert_eq!(problem["field"], field, "{action} {body} → {problem}");
    }
    let (status, problem) = server
        .post(&agent, "/claims/next", json!({"wait_seconds": 61}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("wait_seconds"))
    );
    let (status, problem) = server
        .post(&agent, &format!("/tasks/{id}/claim"), json!({"lease_seconds": 0}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("lease_seconds"))
    );
    let (status, problem) = server.get(&agent, "/tasks?limit=0").await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );
    let (status, problem) = server.get(&agent, "/tasks?shape=round").await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("shape"))
    );
    let (status, problem) = server.get(&agent, "/tasks/999").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    assert_eq!(
        footprint(&server).await,
        after_claim,
        "refused lease calls change nothing"
    );
    assert_eq!(after_claim.0, before.0, "no task was created by bad input");
    let (_, task) = server.get(&agent, &format!("/tasks/{id}")).await;
    assert_eq!(task["progress"]["percent"], 0);
    assert_eq!(task["status"], "in_progress");
}

#[tokio::test]
async fn a_path_segment_of_the_wrong_type_is_a_problem() {
    let server = Server::start().await;
    for path in ["/runs/abc", "/runs/abc/log", "/notifications/x1"] {
        let (status, body) = server.get(&server.admin, path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["code"], "invalid_input", "{path}: {body}");
        assert_eq!(body["field"], "path", "{path}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn changes_are_rate_limited_per_token_and_reads_are_not() {
    let server = Server::start_with(|c| {
        c.server.rate_limit_per_second = 0.001;
        c.server.rate_limit_burst = 3;
    })
    .await;
    for i in 0..2 {
        let (status, _) = server
            .post(&server.admin, "/tasks", json!({"title": format!("t{i}")}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // The third change of the admin token registers an agent; the fourth is refused.
    let agent = server.agent("a", &[]).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/tasks", server.url))
        .bearer_auth(&server.admin)
        .json(&json!({"title": "one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    let (status, page) = server.get(&server.admin, "/tasks").await;
    assert_eq!(status, StatusCode::OK, "reads are not limited");
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        2,
        "the refused change changed nothing"
    );
    let (status, _) = server
        .post(&agent, "/tasks", json!({"title": "another token"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "each token has its own bucket");
    server.stop().await;
}

#[tokio::test]
async fn the_client_waits_out_the_rate_limit_and_sends_again() {
    let server = Server::start_with(|c| {
        c.server.rate_limit_per_second = 1.0;
        c.server.rate_limit_burst = 1;
    })
    .await;
    let client = taskyard::client::Client::new(&server.url, Some(server.admin.clone()));
    // One change per second with no burst to spare: every create after the first is refused
    // once (429, Retry-After) and then sent again by the client.
    for i in 0..3 {
        let created = client
            .post("/tasks", &json!({"title": format!("t{i}")}))
            .await
            .expect("the client retries after 429")
            .unwrap();
        assert_eq!(created["title"], format!("t{i}"));
    }
    let (_, page) = server.get(&server.admin, "/tasks").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "each task once");
    server.stop().await;
}
