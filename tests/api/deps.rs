//! Dependencies, batches, subtasks and cancellation.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn dependent_becomes_claimable_only_after_its_dependency_completes() {
    let server = Server::start().await;
    let agent = server.agent("a", &[]).await;
    let a = server.task(json!({"title": "A", "key": "dep-a"})).await;
    let b = server.task(json!({"title": "B", "depends_on": ["dep-a"]})).await;
    assert_eq!(b["status"], "pending");
    assert_eq!(b["depends_on"], json!([a["id"]]));

    let (status, body) = server
        .post(&agent, &format!("/tasks/{}/claim", b["id"]), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_ready"))
    );
    let (_, why) = server.get(&agent, &format!("/tasks/{}/why", b["id"])).await;
    assert_eq!(why["claimable"], false);
    assert_eq!(why["dependencies"][0]["status"], "available");

    let (_, claim) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(claim["task"]["id"], a["id"], "only A is ready");
    let (_, _) = server
        .post(
            &agent,
            &format!("/tasks/{}/complete", a["id"]),
            json!({"fence": claim["lease"]["fence"], "summary": "ok"}),
        )
        .await;
    let (_, b_now) = server.get(&agent, &format!("/tasks/{}", b["id"])).await;
    assert_eq!(
        b_now["status"], "available",
        "released in the completing transaction"
    );
    let (status, claim) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claim["task"]["id"], b["id"]);
}

#[tokio::test]
async fn cycles_are_rejected() {
    let server = Server::start().await;
    let (status, body) = server
        .post(
            &server.admin,
            "/tasks/batch",
            json!({"tasks": [
                {"title": "x", "key": "x", "depends_on": ["y"]},
                {"title": "y", "key": "y", "depends_on": ["x"]}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(r#"dependency cycle: "x" → "y" → "x""#),
        "{body}"
    );
    assert_eq!(body["field"], "tasks[0].depends_on");
    assert!(server.all_tasks().await.is_empty(), "all or nothing");

    let a = server.task(json!({"title": "a"})).await;
    let b = server.task(json!({"title": "b", "depends_on": [a["id"]]})).await;
    let (status, body) = server
        .call(
            Some(&server.admin),
            Method::PATCH,
            &format!("/tasks/{}", a["id"]),
            Some(json!({"depends_on": [b["id"]]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "depends_on");
    let (_, a_now) = server.get(&server.admin, &format!("/tasks/{}", a["id"])).await;
    assert_eq!(a_now["depends_on"], json!([]));
}

#[tokio::test]
async fn a_failed_dependency_blocks_its_dependents() {
    let server = Server::start().await;
    let agent = server.agent("a", &[]).await;
    let a = server.task(json!({"title": "A"})).await;
    let b = server.task(json!({"title": "B", "depends_on": [a["id"]]})).await;
    let (_, claim) = server
        .post(&agent, &format!("/tasks/{}/claim", a["id"]), json!({}))
        .await;
    let (_, a_now) = server
        .post(
            &agent,
            &format!("/tasks/{}/fail", a["id"]),
            json!({"fence": claim["lease"]["fence"], "reason": "impossible", "retryable": false}),
        )
        .await;
    assert_eq!(a_now["status"], "failed");
    let (_, b_now) = server.get(&agent, &format!("/tasks/{}", b["id"])).await;
    assert_eq!(b_now["status"], "blocked");
    assert!(b_now["status_reason"]
        .as_str()
        .unwrap()
        .contains(&format!("#{}", a["id"])));
    let (status, body) = server
        .post(&server.admin, &format!("/tasks/{}/unblock", b["id"]), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "still depends on a failed task"
    );
}

#[tokio::test]
async fn batch_creates_waves_by_key_and_is_idempotent() {
    let server = Server::start().await;
    let plan = json!({"tasks": [
        {"title": "design", "key": "w1"},
        {"title": "build", "key": "w2", "depends_on": ["w1"]},
        {"title": "ship", "key": "w3", "depends_on": ["w2", "w1"]}
    ]});
    let (status, first) = server.post(&server.admin, "/tasks/batch", plan.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let statuses: Vec<_> = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["available", "pending", "pending"]);
    let (_, again) = server.post(&server.admin, "/tasks/batch", plan).await;
    assert_eq!(first["tasks"], again["tasks"], "same keys, same tasks");
    assert_eq!(server.all_tasks().await.len(), 3);

    let (status, existing) = server
        .post(
            &server.admin,
            "/tasks",
            json!({"title": "other title", "key": "w1"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an existing key returns the existing task"
    );
    assert_eq!(existing["title"], "design");
}

#[tokio::test]
async fn cancelling_a_parent_cancels_unfinished_subtasks() {
    let server = Server::start().await;
    let agent = server.agent("a", &[]).await;
    let parent = server.task(json!({"title": "epic"})).await;
    let (status, child) = server
        .post(
            &agent,
            "/tasks",
            json!({"title": "part 1", "parent_id": parent["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, grandchild) = server
        .post(
            &agent,
            "/tasks",
            json!({"title": "part 1a", "parent_id": child["id"]}),
        )
        .await;
    let (_, done) = server
        .post(
            &agent,
            "/tasks",
            json!({"title": "part 2", "parent_id": parent["id"]}),
        )
        .await;
    let (_, claim) = server
        .post(&agent, &format!("/tasks/{}/claim", done["id"]), json!({}))
        .await;
    server
        .post(
            &agent,
            &format!("/tasks/{}/complete", done["id"]),
            json!({"fence": claim["lease"]["fence"], "summary": "ok"}),
        )
        .await;
    let (_, in_flight) = server
        .post(&agent, &format!("/tasks/{}/claim", grandchild["id"]), json!({}))
        .await;
    assert_eq!(in_flight["task"]["status"], "in_progress");

    let (status, body) = server
        .post(&agent, &format!("/tasks/{}/cancel", parent["id"]), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only the creator or an admin: {body}"
    );
    let other = server.agent("b", &[]).await;
    let (status, body) = server
        .post(&other, &format!("/tasks/{}/cancel", child["id"]), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "b did not create it: {body}");
    let (status, body) = server
        .post(&agent, &format!("/tasks/{}/cancel", child["id"]), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a creator may cancel its own subtree: {body}"
    );
    let (_, now) = server
        .get(&server.admin, &format!("/tasks/{}", grandchild["id"]))
        .await;
    assert_eq!(now["status"], "cancelled", "including what it holds itself");
    let (status, _) = server
        .post(
            &server.admin,
            &format!("/tasks/{}/cancel", parent["id"]),
            json!({"note": "scope cut"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (task, want) in [
        (&parent, "cancelled"),
        (&child, "cancelled"),
        (&grandchild, "cancelled"),
        (&done, "completed"),
    ] {
        let (_, now) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
        assert_eq!(now["status"], want, "{}", now["title"]);
    }
    let (status, body) = server
        .post(
            &agent,
            &format!("/tasks/{}/progress", grandchild["id"]),
            json!({"fence": in_flight["lease"]["fence"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("lease_lost"))
    );
    let (_, subtasks) = server
        .get(&server.admin, &format!("/tasks?parent_id={}", parent["id"]))
        .await;
    assert_eq!(subtasks["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn subtasks_nest_and_fan_out_only_so_far() {
    let server = Server::start_with(|c| {
        c.spawner.max_depth = 2;
        c.spawner.max_fanout = 2;
    })
    .await;
    let top = server.task(json!({"title": "level 0"})).await;
    let one = server
        .task(json!({"title": "level 1", "parent_id": top["id"]}))
        .await;
    let two = server
        .task(json!({"title": "level 2", "parent_id": one["id"]}))
        .await;
    let (status, body) = server
        .post(
            &server.admin,
            "/tasks",
            json!({"title": "level 3", "parent_id": two["id"]}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("parent_id")),
        "{body}"
    );
    server
        .task(json!({"title": "second child", "parent_id": top["id"]}))
        .await;
    let (status, body) = server
        .post(
            &server.admin,
            "/tasks",
            json!({"title": "third child", "parent_id": top["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("already has 2 subtasks"),
        "{body}"
    );
}
