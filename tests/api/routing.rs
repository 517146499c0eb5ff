//! Where urgent work goes: with no agent type that has a command it is pull work; waiting for
//! spawn capacity it stays claimable; a run exists only for a claim that succeeded; work that
//! fell to people can be routed afresh; and `why` says all of this in words.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskyard::config::Config;

use crate::spawn::{agent_type, exited, wait_for, with_assignment, COMPLETES};
use crate::support::Server;

async fn why(server: &Server, task: &Value) -> Value {
    let (status, why) = server
        .get(&server.admin, &format!("/tasks/{}/why", task["id"]))
        .await;
    assert_eq!(status, StatusCode::OK, "{why}");
    why
}

/// The newest routing decision recorded for `task`: (decision, sentence).
async fn decision(server: &Server, task: &Value) -> (Value, String) {
    let why = why(server, task).await;
    let last = why["decisions"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap_or_default();
    (
        last["data"]["decision"].clone(),
        last["text"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn urgent_work_is_pull_work_when_no_agent_type_has_a_command() {
    let server = Server::start().await;
    let p0 = server
        .task(json!({"title": "prod is down", "priority": "P0"}))
        .await;
    let p1 = server
        .task(json!({"title": "fix login", "priority": "P1", "capabilities": ["backend"]}))
        .await;
    let forced = server
        .task(json!({"title": "must be spawned", "priority": "P3", "route": "spawn"}))
        .await;
    let outcome = server.loops.context().spawner.assign().await.unwrap();
    assert_eq!((outcome.spawned, outcome.to_pull, outcome.to_people), (0, 2, 1));
    let (to, text) = decision(&server, &p1).await;
    assert_eq!(to, "pull");
    assert!(text.contains("the spawner is off"), "{text}");
    let (to, text) = decision(&server, &forced).await;
    assert_eq!(to, "human", "route spawn cannot be honoured: a person decides");
    assert!(text.starts_with("sent to people:"), "{text}");
    let w = why(&server, &p1).await;
    assert_eq!(w["claimable"], true, "{w}");
    assert!(
        w["reasons"][0].as_str().unwrap().contains("spawner is off"),
        "{w}"
    );

    let agent = server.agent("puller", &["backend"]).await;
    for want in [&p0, &p1] {
        let (status, claim) = server.post(&agent, "/claims/next", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{claim}");
        assert_eq!(claim["task"]["id"], want["id"]);
    }
    let (status, _) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the route-spawn task is a person's now"
    );
    let (_, runs) = server.get(&server.admin, "/runs").await;
    assert_eq!(runs["items"], json!([]));
    server.stop().await;
}

/// Gives `c` an agent type (whose process never gets to start) and a system-status loop, to be
/// run by hand with [`sample_the_host`], that always finds the host overloaded: memory use
/// above 0% (and CPU never, so the reason does not depend on how busy the machine is).
pub(crate) fn always_overloaded(c: &mut Config) {
    c.agent_types.insert(
        "development-lead".into(),
        taskyard::config::AgentTypeConfig {
            command: vec!["true".into()],
            ..Default::default()
        },
    );
    std::fs::write(
        c.server.loops_dir.join("system-status.toml"),
        "kind = \"system-status\"\nschedule = \"every 1h\"\nenabled = false\ncpu_percent = 100\nmemory_percent = 0\n",
    )
    .unwrap();
}

/// Runs the system-status loop once.
pub(crate) async fn sample_the_host(server: &Server) {
    server.loops.run_now("system-status").await.unwrap();
}

#[tokio::test]
async fn work_waiting_to_be_spawned_stays_claimable_and_why_says_what_it_waits_for() {
    let server = Server::start_with(always_overloaded).await;
    sample_the_host(&server).await;
    let urgent = server.task(json!({"title": "urgent", "priority": "P1"})).await;
    let forced = server
        .task(json!({"title": "spawn only", "priority": "P2", "route": "spawn"}))
        .await;
    let outcome = server.loops.context().spawner.assign().await.unwrap();
    assert_eq!((outcome.spawned, outcome.waiting), (0, 2));
    assert!(
        outcome
            .waiting_because
            .as_deref()
            .unwrap()
            .contains("host overloaded (memory"),
        "{outcome:?}"
    );
    let (to, text) = decision(&server, &urgent).await;
    assert_eq!(to, "wait");
    assert!(
        text.starts_with("waiting to be spawned: host overloaded (memory"),
        "{text}"
    );

    let w = why(&server, &urgent).await;
    assert_eq!(w["claimable"], true, "{w}");
    let first = w["reasons"][0].as_str().unwrap();
    assert!(
        first.starts_with("waiting to be spawned: host overloaded (memory")
            && first.contains("until then the next agent with the required capabilities may claim it"),
        "{w}"
    );
    let w = why(&server, &forced).await;
    assert_eq!(w["claimable"], false, "route spawn is for the spawner only: {w}");
    assert!(w["reasons"][0]
        .as_str()
        .unwrap()
        .starts_with("waiting to be spawned: host overloaded"));

    // Whoever is free first takes it; the spawner then starts nothing for it.
    let agent = server.agent("puller", &[]).await;
    let (_, claim) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(claim["task"]["id"], urgent["id"], "{claim}");
    let (status, _) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_names_the_agent_type_whose_slots_are_full() {
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(scripts.path(), "sleeper", "sleep 300", |t| {
                t.max_concurrent = Some(1)
            }),
        );
    })
    .await;
    let mut events = server.app_store.bus().subscribe();
    server.task(json!({"title": "first", "priority": "P0"})).await;
    server.loops.context().spawner.assign().await.unwrap();
    wait_for(&mut events, |e| e.kind() == "run.started").await;
    let second = server.task(json!({"title": "second", "priority": "P0"})).await;
    let outcome = server.loops.context().spawner.assign().await.unwrap();
    assert_eq!(outcome.waiting, 1);
    let w = why(&server, &second).await;
    assert_eq!(w["claimable"], true);
    assert!(
        w["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("waiting for capacity: development-lead 1/1 running"),
        "{w}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_run_is_recorded_only_for_a_claim_that_succeeded() {
    let server = Server::start().await;
    let task = server.task(json!({"title": "urgent", "priority": "P0"})).await;
    let agent = server.agent("puller-3", &[]).await;
    let (status, _) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // The spawner lost the race: its claim is refused and nothing of the run is kept.
    let refused = server
        .app_store
        .start_run(
            task["id"].as_i64().unwrap(),
            "development-lead",
            &"0".repeat(64),
            Duration::from_secs(60),
            "P0 work is spawned",
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(taskyard::store::StoreError::Refused(taskyard::domain::Refused::AlreadyClaimed { ref holder }))
                if holder == "puller-3"
        ),
        "{refused:?}"
    );
    let (_, runs) = server.get(&server.admin, "/runs").await;
    assert_eq!(runs["items"], json!([]), "losing the race is not a run");
    let (_, agents) = server.get(&server.admin, "/agents?all=true").await;
    assert!(
        !agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "spawned"),
        "{agents}"
    );
    let (_, why) = server
        .get(&server.admin, &format!("/tasks/{}/why", task["id"]))
        .await;
    assert_eq!(why["decisions"], json!([]), "nor a routing decision");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_fell_to_people_is_routed_afresh_on_request() {
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    // No agent type yet: the task that must be spawned goes to people.
    let server = Server::boot(with_assignment(data.path())).await;
    let task = server
        .task(json!({"title": "spawn me", "priority": "P2", "route": "spawn"}))
        .await;
    server.loops.context().spawner.assign().await.unwrap();
    assert_eq!(decision(&server, &task).await.0, "human");
    server.stop().await;

    // Agent types added: the task stays with people until someone routes it afresh.
    let mut config = with_assignment(data.path());
    config.agent_types.insert(
        "development-lead".into(),
        agent_type(scripts.path(), "lead", COMPLETES, |_| {}),
    );
    let server = Server::boot(config).await;
    let outcome = server.loops.context().spawner.assign().await.unwrap();
    assert_eq!(outcome.spawned, 0, "people keep what they were given");
    let (status, body) = server
        .patch(&server.admin, &format!("/tasks/{}", task["id"]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["detail"].as_str().unwrap().contains("reroute"), "{body}");
    let agent = server.agent("someone", &[]).await;
    let path = format!("/tasks/{}/reroute", task["id"]);
    let (status, _) = server.post(&agent, &path, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only an admin reroutes");

    let mut events = server.app_store.bus().subscribe();
    let (status, rerouted) = server.post(&server.admin, &path, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rerouted}");
    // The assignment loop is woken by the rerouted work and spawns it.
    wait_for(&mut events, exited(&task)).await;
    let (_, done) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(done["status"], "completed", "{done}");
    let texts: Vec<String> = why(&server, &task).await["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts[1].starts_with("to be routed afresh, as admin asked"),
        "{texts:?}"
    );
    assert!(
        texts[2].starts_with("spawned: its route is spawn: run #"),
        "{texts:?}"
    );
    server.stop().await;
}
