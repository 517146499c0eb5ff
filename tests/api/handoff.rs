//! Handoff: a task that comes back is claimed with what earlier attempts left — holder, how it
//! ended, progress and notes — over REST, and in a spawned retry's prompt.

use reqwest::StatusCode;
use serde_json::json;

use crate::leases::outlive;
use crate::spawn::{agent_type, wait_for, with_assignment};
use crate::support::Server;

#[tokio::test]
async fn the_next_claimant_is_handed_what_a_vanished_agent_left() {
    let server = Server::start().await;
    let gone = server.agent("claude-1", &[]).await;
    let next = server.agent("codex-2", &[]).await;
    let id = server.task(json!({"title": "auth middleware"})).await["id"]
        .as_i64()
        .unwrap();

    let (status, first) = server
        .post(&gone, "/claims/next", json!({"lease_seconds": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(
        first.get("handoff").is_none(),
        "a first claim has nothing handed over: {first}"
    );
    let fence = first["lease"]["fence"].as_i64().unwrap();
    for (percent, note) in [
        (30, "reading the session code"),
        (60, "middleware written, tests next"),
    ] {
        let (status, body) = server
            .post(
                &gone,
                &format!("/tasks/{id}/progress"),
                json!({"fence": fence, "percent": percent, "note": note}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    outlive(&first).await;

    let (status, second) = server.post(&next, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["task"]["id"].as_i64(), Some(id));
    let attempts = second["handoff"]["attempts"].as_array().expect("a handoff");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let a = &attempts[0];
    assert_eq!(
        (
            a["holder"].as_str(),
            a["outcome"].as_str(),
            a["percent"].as_i64(),
            a["fence"].as_i64()
        ),
        (Some("claude-1"), Some("expired"), Some(60), Some(fence))
    );
    assert_eq!(
        a["notes"],
        json!(["reading the session code", "middleware written, tests next"])
    );

    // The same, asked for.
    let (status, shown) = server.get(&next, &format!("/tasks/{id}/handoff")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown, second["handoff"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_retry_is_told_what_the_failed_run_left() {
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = with_assignment(data.path());
    // The first run reports progress and dies; the second keeps its prompt and completes.
    let body = r#"
if [ "$TASKYARD_FENCE" = 1 ]; then
  "$TASKYARD_BIN" task progress --percent 60 --note "middleware written, tests next" || exit 9
  echo "compiling tests: error[E0425]"
  exit 1
fi
cp "$TASKYARD_PROMPT_FILE" "$OUT/second-prompt.md"
"$TASKYARD_BIN" task complete --summary "finished what run 1 began"
"#;
    config.agent_types.insert(
        "development-lead".into(),
        agent_type(scripts.path(), "twice", body, |_| {}),
    );
    let server = Server::boot(config).await;
    let mut events = server.app_store.bus().subscribe();
    let task = server
        .task(json!({"title": "auth middleware", "priority": "P0"}))
        .await;
    let id = task["id"].as_i64().unwrap();
    wait_for(&mut events, |e| {
        e.task_id == Some(id) && e.kind() == "task.completed"
    })
    .await;

    let prompt = std::fs::read_to_string(scripts.path().join("second-prompt.md")).unwrap();
    assert!(prompt.contains("Attempt 2 of 3."), "{prompt}");
    assert!(
        prompt.contains(
            "An earlier attempt by development-lead run 1 reached 60%: \
            'middleware written, tests next', then failed"
        ),
        "{prompt}"
    );
    let (_, handoff) = server.get(&server.admin, &format!("/tasks/{id}/handoff")).await;
    let a = &handoff["attempts"][0];
    assert_eq!(a["outcome"], "failed", "{handoff}");
    assert!(a["run_id"].as_i64().is_some(), "{handoff}");
    assert!(
        a["log_tail"]
            .as_str()
            .unwrap_or("")
            .contains("compiling tests: error[E0425]"),
        "{handoff}"
    );
    server.stop().await;
}
