//! Authentication and roles.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn tokens_and_roles_are_enforced() {
    let server = Server::start().await;
    let (status, body) = server.call(None, Method::GET, "/tasks", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _) = server.get("not-a-token", "/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let viewer = server.agent_with_role("watcher", &[], "viewer").await;
    let a = server.agent("a", &[]).await;
    let b = server.agent("b", &[]).await;
    let task = server.task(json!({"title": "t"})).await;
    let id = task["id"].as_i64().unwrap();

    let (status, _) = server.get(&viewer, &format!("/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK, "viewers read");
    let (status, body) = server
        .post(&viewer, &format!("/tasks/{id}/claim"), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, _) = server.post(&viewer, "/tasks", json!({"title": "nope"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, claim) = server.post(&a, &format!("/tasks/{id}/claim"), json!({})).await;
    let fence = claim["lease"]["fence"].clone();
    for (action, body) in [
        ("progress", json!({"fence": fence, "percent": 5})),
        ("complete", json!({"fence": fence, "summary": "x"})),
        ("fail", json!({"fence": fence, "reason": "x"})),
        ("release", json!({"fence": fence})),
        ("block", json!({"fence": fence, "reason": "x"})),
    ] {
        let (status, body) = server.post(&b, &format!("/tasks/{id}/{action}"), body).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{action}: {body}"
        );
    }
    let (_, now) = server.get(&a, &format!("/tasks/{id}")).await;
    assert_eq!(now["lease"]["holder"], "a");

    let (status, _) = server
        .post(&a, "/agents", json!({"name": "sneaky", "role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins create agents");
    let (status, _) = server
        .call(
            Some(&a),
            Method::PATCH,
            &format!("/tasks/{id}"),
            Some(json!({"title": "mine now"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins edit");
    let (status, body) = server.post(&server.admin, "/agents", json!({"name": "a"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "names are unique"
    );

    let (_, agents) = server.get(&viewer, "/agents").await;
    let a_row = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "a")
        .unwrap()
        .clone();
    assert!(a_row["last_seen"].is_string(), "any call refreshes last_seen");
    assert!(a_row.get("token").is_none() && a_row.get("token_hash").is_none());
}

#[tokio::test]
async fn healthz_and_openapi_need_no_token() {
    let server = Server::start().await;
    let (status, health) = server.call(None, Method::GET, "/healthz", None).await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, doc) = server.call(None, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/tasks",
        "/api/v1/tasks/batch",
        "/api/v1/claims/next",
        "/api/v1/tasks/{id}/complete",
        "/api/v1/agents",
        "/api/v1/events",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"].get("Problem").is_some());
    let (status, body) = server.call(None, Method::GET, "/no/such/thing", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}
