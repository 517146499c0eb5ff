//! The auto-spawner with real child processes; small shell scripts stand in for agent programs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskyard::config::{AgentTypeConfig, Config, OnRestart};
use taskyard::domain::Event;
use tokio::sync::broadcast;

use crate::support::{test_config, Server};

/// Writes an executable script and returns the agent type that runs it.
pub(crate) fn agent_type(
    dir: &Path,
    name: &str,
    body: &str,
    tweak: impl FnOnce(&mut AgentTypeConfig),
) -> AgentTypeConfig {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut t = AgentTypeConfig {
        command: vec![path.to_str().unwrap().to_string(), "{task.id}".into()],
        env: BTreeMap::from([
            (
                "TASKYARD_BIN".to_string(),
                env!("CARGO_BIN_EXE_taskyard").to_string(),
            ),
            ("OUT".to_string(), dir.to_str().unwrap().to_string()),
        ]),
        ..Default::default()
    };
    tweak(&mut t);
    t
}

/// A config whose loops folder holds only the assignment loop (woken by new work).
pub(crate) fn with_assignment(data_dir: &Path) -> Config {
    let config = test_config(data_dir);
    std::fs::write(
        config.server.loops_dir.join("assignment.toml"),
        "kind = \"assignment\"\nschedule = \"every 1h\"\n",
    )
    .unwrap();
    config
}

/// Waits (at most a minute, as a guard against a hang) for an event matching `want`.
pub(crate) async fn wait_for(
    events: &mut broadcast::Receiver<Event>,
    want: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await {
                Ok(e) if want(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream closed: {e}"),
            }
        }
    })
    .await
    .expect("the awaited event arrived")
}

/// A server whose development-lead agent echoes `up` and sleeps five minutes, with one P0 task
/// already being worked by such an agent.
pub(crate) struct SleepingRun {
    pub server: Server,
    /// Every event since just before the task was created.
    pub events: broadcast::Receiver<Event>,
    pub task: Value,
    pub run_id: i64,
    /// The agent's script: keep it bound while the run should live.
    pub scripts: tempfile::TempDir,
}

pub(crate) async fn sleeping_run() -> SleepingRun {
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(scripts.path(), "sleeper", "echo up\nsleep 300", |_| {}),
        );
    })
    .await;
    let mut events = server.app_store.bus().subscribe();
    let task = server.task(json!({"title": "t", "priority": "P0"})).await;
    server.loops.context().spawner.assign().await.unwrap();
    let started = wait_for(&mut events, |e| e.kind() == "run.started").await;
    let run_id = started.data()["run_id"].as_i64().unwrap();
    SleepingRun {
        server,
        events,
        task,
        run_id,
        scripts,
    }
}

/// Run `id`'s log, as the API serves it to an admin.
pub(crate) async fn run_log(server: &Server, id: impl std::fmt::Display) -> String {
    reqwest::Client::new()
        .get(format!("{}/api/v1/runs/{id}/log", server.url))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub(crate) fn exited(task: &Value) -> impl Fn(&Event) -> bool + '_ {
    move |e: &Event| e.kind() == "run.exited" && Some(e.task_id.unwrap_or(-1)) == task["id"].as_i64()
}

pub(crate) const COMPLETES: &str = r#"echo "agent for task $1 starting"
"$TASKYARD_BIN" task progress --percent 50 --note "halfway" || exit 7
"$TASKYARD_BIN" task complete --summary "done by run $TASKYARD_RUN_ID" || exit 8"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p0_backend_task_is_done_by_a_spawned_backend_specialist() {
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = with_assignment(data.path());
    config.agent_types.insert(
        "backend-specialist".into(),
        agent_type(
            scripts.path(),
            "backend",
            &format!("echo \"$TASKYARD_TOKEN\" > \"$OUT/token\"\n{COMPLETES}"),
            |_| {},
        ),
    );
    let server = Server::boot(config).await;
    let mut events = server.app_store.bus().subscribe();
    let task = server
        .task(json!({"title": "Fix the API", "priority": "P0", "capabilities": ["backend"]}))
        .await;
    let ended = wait_for(&mut events, exited(&task)).await;
    assert_eq!(ended.data()["status"], "succeeded", "{:?}", ended.data());

    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["status"], "completed");
    assert!(t["result"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("done by run"));
    let (_, runs) = server
        .get(&server.admin, &format!("/runs?task_id={}", task["id"]))
        .await;
    let run = &runs["items"][0];
    assert_eq!(
        (run["agent_type"].as_str(), run["exit_code"].as_i64()),
        (Some("backend-specialist"), Some(0))
    );
    assert_eq!(run["holder"], format!("run-{}", run["id"]));
    let log = run_log(&server, &run["id"]).await;
    assert!(
        log.contains(&format!("agent for task {} starting", task["id"])),
        "{log}"
    );
    let (_, why) = server
        .get(&server.admin, &format!("/tasks/{}/why", task["id"]))
        .await;
    let routed = why["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "task.routed")
        .unwrap()
        .clone();
    assert_eq!(routed["data"]["decision"], "spawn");
    // The run's token ended with the run.
    let token = std::fs::read_to_string(scripts.path().join("token")).unwrap();
    let (status, _) = server.get(token.trim(), "/tasks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Its agent is not listed as an agent any more (runs are listed under runs), unless asked.
    let holder = run["holder"].as_str().unwrap();
    let (_, agents) = server.get(&server.admin, "/agents").await;
    assert!(
        !agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == holder),
        "{agents}"
    );
    let (_, agents) = server.get(&server.admin, "/agents?all=true").await;
    let listed = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == holder)
        .unwrap_or_else(|| panic!("{agents}"));
    assert_eq!(listed["status"], "offline", "a finished run is not online");
    server.stop().await;
}

#[tokio::test]
async fn routing_sends_work_to_pull_people_or_fallback() {
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(scripts.path(), "lead", "sleep 300", |_| {}),
        );
    })
    .await;
    let p2 = server.task(json!({"title": "later", "priority": "P2"})).await;
    let arch = server
        .task(json!({"title": "pick a database", "priority": "P0", "kind": "architecture"}))
        .await;
    let no_cmd = server
        .task(json!({"title": "test it", "priority": "P1", "capabilities": ["testing"]}))
        .await;
    let outcome = server.loops.context().spawner.assign().await.unwrap();
    assert_eq!((outcome.spawned, outcome.to_people, outcome.to_pull), (0, 2, 1));
    let decision = |task: Value| {
        let server = &server;
        async move {
            let (_, why) = server
                .get(&server.admin, &format!("/tasks/{}/why", task["id"]))
                .await;
            let routed = why["decisions"].as_array().unwrap().last().unwrap().clone();
            (
                routed["data"]["decision"].as_str().unwrap().to_string(),
                routed["data"]["reason"].as_str().unwrap().to_string(),
            )
        }
    };
    assert_eq!(decision(p2.clone()).await.0, "pull");
    assert_eq!(decision(arch).await.0, "human");
    let (to, why) = decision(no_cmd.clone()).await;
    assert_eq!(to, "human");
    assert!(why.contains("quality-lead has no command"), "{why}");
    // Work that went to a person is not handed to agents by claim-next.
    let agent = server.agent("puller", &["testing"]).await;
    let (_, claim) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(claim["task"]["id"], p2["id"]);
    let (status, _) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A second pass decides the same and records nothing new.
    let before = server.all_events().await.len();
    server.loops.context().spawner.assign().await.unwrap();
    assert_eq!(server.all_events().await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_exceeds_the_caps_and_all_finish() {
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = with_assignment(data.path());
    config.spawner.max_concurrent = 3;
    let body = format!("sleep 0.2\n{COMPLETES}");
    config.agent_types.insert(
        "development-lead".into(),
        agent_type(scripts.path(), "lead", &body, |_| {}),
    );
    let server = Server::boot(config).await;
    let mut events = server.app_store.bus().subscribe();
    let tasks: Vec<Value> = (0..20)
        .map(|i| json!({"title": format!("urgent {i}"), "priority": "P1"}))
        .collect();
    let (status, _) = server
        .post(&server.admin, "/tasks/batch", json!({"tasks": tasks}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for _ in 0..20 {
        let ended = wait_for(&mut events, |e| e.kind() == "run.exited").await;
        assert_eq!(ended.data()["status"], "succeeded");
    }
    assert!(server
        .all_tasks()
        .await
        .iter()
        .all(|t| t["status"] == "completed"));
    let (_, runs) = server.get(&server.admin, "/runs?limit=100").await;
    let runs = runs["items"].as_array().unwrap();
    assert_eq!(runs.len(), 20, "one run per task, none failed");
    let spans: Vec<(i64, i64)> = runs
        .iter()
        .map(|r| {
            let t = |k: &str| {
                chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis()
            };
            (t("started_at"), t("ended_at"))
        })
        .collect();
    let most = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(s2, e2)| s2 <= s && s < e2).count())
        .max()
        .unwrap();
    assert!(most <= 3, "{most} runs overlapped");
    server.stop().await;
}

/// True when `pid` is gone or a zombie.
pub(crate) fn dead(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_agent_is_killed_at_its_timeout_with_its_grandchild() {
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.spawner.kill_grace = taskyard::domain::time::Span(Duration::from_millis(500));
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(
                scripts.path(),
                "hang",
                "sleep 300 &\necho $! > \"$OUT/grandchild\"\nsleep 300",
                |t| {
                    t.timeout = Some(taskyard::domain::time::Span(Duration::from_secs(1)));
                },
            ),
        );
    })
    .await;
    let mut events = server.app_store.bus().subscribe();
    let task = server.task(json!({"title": "hangs", "priority": "P0"})).await;
    server.loops.context().spawner.assign().await.unwrap();
    let ended = wait_for(&mut events, exited(&task)).await;
    assert_eq!(ended.data()["status"], "timed_out");
    let grandchild: i64 = std::fs::read_to_string(scripts.path().join("grandchild"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dead(grandchild) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dead(grandchild), "the grandchild went with its group");
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_i64()),
        (Some("available"), Some(1)),
        "retried later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_completes_is_retried_then_fails_to_a_person() {
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = with_assignment(data.path());
    config.agent_types.insert(
        "development-lead".into(),
        agent_type(scripts.path(), "quitter", "echo giving up; exit 1", |_| {}),
    );
    let server = Server::boot(config).await;
    let mut events = server.app_store.bus().subscribe();
    let task = server
        .task(json!({"title": "hard", "priority": "P1", "max_attempts": 2}))
        .await;
    for _ in 0..2 {
        wait_for(&mut events, exited(&task)).await;
    }
    let all = server.all_events().await;
    assert!(
        all.iter()
            .any(|e| e.kind() == "task.failed" && e.data()["final"] == true),
        "failed for good"
    );
    let routed = all.iter().rev().find(|e| e.kind() == "task.routed").unwrap();
    assert_eq!(routed.data()["decision"], "human");
    assert!(
        routed.data()["reason"]
            .as_str()
            .unwrap()
            .contains("all 2 attempts"),
        "{:?}",
        routed.data()
    );
    let (_, runs) = server
        .get(&server.admin, &format!("/runs?task_id={}", task["id"]))
        .await;
    let statuses: Vec<&str> = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "failed"]);
    assert_eq!(runs["items"][0]["exit_code"], 1);
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["status"], "failed");
    server.stop().await;
}

#[tokio::test]
async fn an_agent_that_cannot_start_falls_back_to_a_person() {
    let server = Server::start_with(|c| {
        c.agent_types.insert(
            "development-lead".into(),
            AgentTypeConfig {
                command: vec!["/no/such/agent".into()],
                ..Default::default()
            },
        );
    })
    .await;
    let task = server.task(json!({"title": "t", "priority": "P0"})).await;
    let outcome = server.loops.context().spawner.assign().await.unwrap();
    assert_eq!(outcome.to_people, 1);
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_i64()),
        (Some("available"), Some(0)),
        "handed back whole"
    );
    let (_, why) = server
        .get(&server.admin, &format!("/tasks/{}/why", task["id"]))
        .await;
    let reason = why["decisions"].as_array().unwrap().last().unwrap()["data"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("could not start") && reason.contains("/no/such/agent"),
        "{reason}"
    );
    let (_, runs) = server.get(&server.admin, "/runs").await;
    assert_eq!(runs["items"][0]["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_settles_live_and_vanished_runs() {
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.spawner.on_restart = OnRestart::Terminate;
    config.spawner.kill_grace = taskyard::domain::time::Span(Duration::from_millis(500));
    config.agent_types.insert(
        "development-lead".into(),
        agent_type(scripts.path(), "sleeper", "sleep 300", |_| {}),
    );
    let server = Server::boot(config.clone()).await;
    let mut events = server.app_store.bus().subscribe();
    let alive = server.task(json!({"title": "alive", "priority": "P0"})).await;
    let dies = server.task(json!({"title": "dies", "priority": "P0"})).await;
    assert_eq!(server.loops.context().spawner.assign().await.unwrap().spawned, 2);
    wait_for(&mut events, |e| {
        e.kind() == "run.started" && e.task_id == alive["id"].as_i64()
    })
    .await;
    let (_, runs) = server.get(&server.admin, "/runs").await;
    let pid_of = |task: &Value| -> i64 {
        runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["task_id"] == task["id"])
            .unwrap()["pid"]
            .as_i64()
            .unwrap()
    };
    let (alive_pid, dead_pid) = (pid_of(&alive), pid_of(&dies));
    server.stop().await;
    assert!(!dead(alive_pid), "a server stop leaves runs alive");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(dead_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let server = Server::boot(config).await;
    let (_, runs) = server.get(&server.admin, "/runs").await;
    let status_of = |task: &Value| {
        runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["task_id"] == task["id"])
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status_of(&alive), "killed");
    assert_eq!(status_of(&dies), "lost");
    for task in [&alive, &dies] {
        let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
        assert_eq!(
            (t["status"].as_str(), t["attempts"].as_i64()),
            (Some("available"), Some(0)),
            "{}",
            t["title"]
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dead(alive_pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dead(alive_pid), "terminated at the restart");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtasks_of_a_running_agent_are_spawned_and_die_with_their_parent() {
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = with_assignment(data.path());
    let lead = r#""$TASKYARD_BIN" task add "escape" > /dev/null 2>&1; echo $? > "$OUT/escape"
"$TASKYARD_BIN" task add "part one" -p P0 -c worker --parent "$TASKYARD_TASK_ID" || exit 9
sleep 300"#;
    config.agent_types.insert(
        "development-lead".into(),
        agent_type(scripts.path(), "lead", lead, |_| {}),
    );
    config.agent_types.insert(
        "worker-bee".into(),
        agent_type(scripts.path(), "worker", "sleep 300", |_| {}),
    );
    config
        .routing
        .agent_types
        .insert("worker".into(), "worker-bee".into());
    let server = Server::boot(config).await;
    let mut events = server.app_store.bus().subscribe();
    let parent = server.task(json!({"title": "epic", "priority": "P0"})).await;
    let started = wait_for(&mut events, |e| {
        e.kind() == "run.started" && e.data()["agent_type"] == "worker-bee"
    })
    .await;
    let child_id = started.task_id.unwrap();
    let (_, child) = server.get(&server.admin, &format!("/tasks/{child_id}")).await;
    assert_eq!(child["parent_id"], parent["id"]);
    assert!(child["created_by"].as_str().unwrap().starts_with("run-"));
    let escape = std::fs::read_to_string(scripts.path().join("escape")).unwrap();
    assert_ne!(escape.trim(), "0", "a run's token cannot file top-level work");

    let (status, _) = server
        .post(
            &server.admin,
            &format!("/tasks/{}/cancel", parent["id"]),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let e = wait_for(&mut events, |e| e.kind() == "run.exited").await;
        ended.push((
            e.task_id.unwrap(),
            e.data()["status"].as_str().unwrap().to_string(),
        ));
    }
    ended.sort();
    assert_eq!(
        ended,
        [
            (parent["id"].as_i64().unwrap(), "killed".to_string()),
            (child_id, "killed".to_string())
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_can_be_killed_from_the_api() {
    let SleepingRun {
        server,
        mut events,
        task,
        run_id,
        scripts: _scripts,
        ..
    } = sleeping_run().await;
    // The script has said "up" (a kill may otherwise land before its first line).
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if run_log(&server, run_id).await.contains("up") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the run writes its first line");
    // Follow the log while the run lives; the stream ends when the run does.
    let follow = reqwest::Client::new()
        .get(format!("{}/api/v1/runs/{run_id}/log?follow=true", server.url))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    let followed = tokio::spawn(async move { follow.text().await.unwrap() });
    let agent = server.agent("a", &[]).await;
    let (status, _) = server
        .post(&agent, &format!("/runs/{run_id}/kill"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .post(&server.admin, &format!("/runs/{run_id}/kill"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ended = wait_for(&mut events, exited(&task)).await;
    assert_eq!(ended.data()["status"], "killed");
    let text = tokio::time::timeout(Duration::from_secs(30), followed)
        .await
        .expect("the followed log ends")
        .unwrap();
    assert!(text.contains("up"), "{text}");
    let (status, body) = server
        .post(&server.admin, &format!("/runs/{run_id}/kill"), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
}
