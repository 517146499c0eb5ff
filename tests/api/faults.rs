//! Fault injection: an agent that floods its output, one that forks many children and hangs,
//! and a mail server that never answers. The server caps, kills, retries, and keeps serving.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use taskyard::domain::time::Span;

use crate::notify::{eventually, mail_config, notifications};
use crate::smtp::SilentSmtp;
use crate::spawn::{agent_type, dead, exited, wait_for};
use crate::support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flooding_its_output_is_capped_and_the_server_keeps_serving() {
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.spawner.log_max_bytes = 64 * 1024;
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(
                scripts.path(),
                "flood",
                // 50 MB of output, then the agent reports and completes through the API: it
                // can only get there if the server keeps draining its output and answering.
                "head -c 50000000 /dev/zero | tr '\\0' 'x'\n\
                 \"$TASKYARD_BIN\" task progress --percent 90 --note flooded || exit 7\n\
                 \"$TASKYARD_BIN\" task complete --summary \"survived the flood\" || exit 8",
                |_| {},
            ),
        );
    })
    .await;
    let mut events = server.app_store.bus().subscribe();
    let task = server.task(json!({"title": "floods", "priority": "P0"})).await;
    server.loops.context().spawner.assign().await.unwrap();
    let ended = wait_for(&mut events, exited(&task)).await;
    assert_eq!(ended.data()["status"], "succeeded", "{:?}", ended.data());
    let (_, runs) = server
        .get(&server.admin, &format!("/runs?task_id={}", task["id"]))
        .await;
    let log = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/runs/{}/log?tail=10000000",
            server.url, runs["items"][0]["id"]
        ))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        log.len() <= 64 * 1024 + 1024,
        "the log is capped: {} bytes",
        log.len()
    );
    assert!(
        log.len() >= 60 * 1024,
        "the log kept output up to its cap: {} bytes",
        log.len()
    );
    let (status, _) = server.get(&server.admin, "/stats").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_forking_many_children_loses_them_all_at_its_timeout() {
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.spawner.kill_grace = Span(Duration::from_millis(500));
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(
                scripts.path(),
                "forks",
                "i=0\nwhile [ $i -lt 40 ]; do sleep 300 & echo $! >> \"$OUT/children\"; i=$((i+1)); done\n\
                 ( sleep 300 & echo $! >> \"$OUT/children\"; wait ) &\n\
                 echo ready > \"$OUT/ready\"\nwait",
                |t| t.timeout = Some(Span(Duration::from_secs(1))),
            ),
        );
    })
    .await;
    let mut events = server.app_store.bus().subscribe();
    let task = server.task(json!({"title": "forks", "priority": "P0"})).await;
    server.loops.context().spawner.assign().await.unwrap();
    let ended = wait_for(&mut events, exited(&task)).await;
    assert_eq!(ended.data()["status"], "timed_out", "{:?}", ended.data());
    assert!(
        scripts.path().join("ready").exists(),
        "every child was started before the timeout"
    );
    let children: Vec<i64> = std::fs::read_to_string(scripts.path().join("children"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(children.len(), 41);
    // The kill is TERM then KILL to the whole group; reaping may take a moment (bounded here
    // only as a guard against a hang).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while children.iter().any(|&pid| !dead(pid)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive: Vec<&i64> = children.iter().filter(|&&pid| !dead(pid)).collect();
    assert!(alive.is_empty(), "children left alive: {alive:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_that_never_answers_times_out_and_is_retried() {
    let smtp = SilentSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = mail_config(dir.path(), smtp.port);
    config.notify.smtp.timeout = Span(Duration::from_secs(1));
    let server = Server::boot(config).await;
    let task = server
        .task(json!({"title": "Decide on hosting", "kind": "strategic", "capabilities": ["architecture"]}))
        .await;
    let tried = eventually(|| async {
        notifications(&server, &task["id"])
            .await
            .into_iter()
            .find(|n| n["attempts"].as_i64() >= Some(1))
    })
    .await;
    assert_eq!(
        tried["status"], "queued",
        "a hung server is retried, not given up on: {tried}"
    );
    let error = tried["last_error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("time"), "{error}");
    // The server answered throughout.
    let (status, _) = server.get(&server.admin, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}
