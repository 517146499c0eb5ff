//! The leader among several nodes: when it is SIGKILLed another node takes the lease and runs
//! the loops that must run once (expired leases are still reaped, P0 work is still spawned);
//! and with agent types configured on every node, urgent work is spawned once, not once per
//! node.

use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::backend;
use crate::nodes::Cluster;
use crate::spawn::COMPLETES;
use crate::support::ADMIN_TOKEN;

/// The loops every node of these tests runs: the reaper each second, and assignment (woken at
/// once by new work).
const LOOPS: &[(&str, &str)] = &[
    (
        "lease-reaper.toml",
        "kind = \"lease-reaper\"\nschedule = \"every 1s\"\n",
    ),
    (
        "assignment.toml",
        "kind = \"assignment\"\nschedule = \"every 1s\"\n",
    ),
];

/// A config whose development-lead agents complete their task; the script lives in `dir`.
fn completing_agents(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("completes.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{COMPLETES}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "[agent_types.development-lead]\ncommand = [{script:?}, \"{{task.id}}\"]\n\
         [agent_types.development-lead.env]\nTASKYARD_BIN = {bin:?}\n",
        script = script.to_str().unwrap(),
        bin = env!("CARGO_BIN_EXE_taskyard"),
    )
}

/// The runs of task `id`, as node `i` lists them once none is live (60 s at most: a run's task
/// is completed a moment before its process exits).
async fn runs_of(cluster: &Cluster, i: usize, id: &Value) -> Vec<Value> {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let (status, body) = cluster.get(i, ADMIN_TOKEN, &format!("/runs?task_id={id}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let runs = body["items"].as_array().unwrap().clone();
            if runs.iter().all(|r| r["ended_at"] != Value::Null) {
                return runs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the runs of task {id} never ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_is_killed_another_node_reaps_and_spawns() {
    if backend::postgres_only("a leader's failover") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(2, LOOPS, Some(&completing_agents(scripts.path()))).await;
    let first = cluster.node_id(0).await;
    let second = cluster.node_id(1).await;
    assert_eq!(
        cluster.leader_seen_by(1).await,
        first,
        "the first node to boot leads"
    );

    // A lease that runs out once the leader is gone.
    let token = cluster.agent(1, "forgetful").await;
    let (status, task) = cluster
        .post(
            1,
            ADMIN_TOKEN,
            "/tasks",
            json!({"title": "held, then forgotten", "priority": "P2"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    let (status, claim) = cluster
        .post(
            1,
            &token,
            &format!("/tasks/{id}/claim"),
            // Long enough that only a reaper running after the kill can return the task.
            json!({"lease_seconds": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{claim}");

    cluster.kill(0).await;
    let killed = Instant::now();
    cluster.wait_for_leader(1, &second).await;
    println!(
        "a new leader {} ms after the leader was SIGKILLed",
        killed.elapsed().as_millis()
    );
    let list = cluster.node_list(1).await;
    assert_eq!(list.iter().filter(|n| n["leader"] == true).count(), 1, "{list:?}");

    // The survivor's reaper returns the expired lease...
    let reaped = cluster.wait_for_task(1, id, |t| t["status"] == "available").await;
    assert_eq!(reaped["lease"], Value::Null, "{reaped}");
    // ...and its assignment loop spawns new urgent work, on the survivor.
    let (status, urgent) = cluster
        .post(
            1,
            ADMIN_TOKEN,
            "/tasks",
            json!({"title": "urgent, after the failover", "priority": "P0"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{urgent}");
    let done = cluster
        .wait_for_task(1, urgent["id"].as_i64().unwrap(), |t| t["status"] == "completed")
        .await;
    assert_eq!(done["status"], "completed");
    let runs = runs_of(&cluster, 1, &urgent["id"]).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0]["node"], second,
        "the run belongs to the node that started it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_work_is_spawned_once_with_agent_types_on_every_node() {
    if backend::postgres_only("spawning across nodes") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(3, LOOPS, Some(&completing_agents(scripts.path()))).await;
    let tasks: Vec<Value> = (0..9)
        .map(|i| json!({"title": format!("urgent {i}"), "priority": "P0"}))
        .collect();
    let (status, made) = cluster
        .post(0, ADMIN_TOKEN, "/tasks/batch", json!({"tasks": tasks}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let ids: Vec<Value> = made["tasks"]
        .as_array()
        .expect("the batch answers its tasks")
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(ids.len(), 9, "{made}");
    // Besides the leader's own pass (woken by the new work), a pass by hand on every node at
    // once: as if stale leaders still acted. Each spawn is a fenced claim, so one wins per task.
    let passes = (0..3).map(|i| cluster.post(i, ADMIN_TOKEN, "/loops/assignment/run", json!({})));
    for (status, body) in futures::future::join_all(passes).await {
        assert!(
            status.is_success() || status == StatusCode::CONFLICT,
            "{status} {body}"
        );
    }
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(cluster.node_id(i).await);
    }
    for id in &ids {
        let task = cluster
            .wait_for_task(2, id.as_i64().unwrap(), |t| t["status"] == "completed")
            .await;
        assert_eq!(task["attempts"], 1, "{task}");
        let runs = runs_of(&cluster, 0, id).await;
        assert_eq!(runs.len(), 1, "task {id} was spawned once: {runs:?}");
        assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
        assert!(
            nodes.contains(&runs[0]["node"].as_str().unwrap().to_string()),
            "{runs:?}"
        );
    }
    // Nothing else was started, on any node.
    let (status, all) = cluster.get(1, ADMIN_TOKEN, "/runs?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["items"].as_array().unwrap().len(), ids.len(), "{all}");
}
