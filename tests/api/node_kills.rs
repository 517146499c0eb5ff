//! Three nodes on one database, 64 agents spread over them, 10,000 tasks, while one node after
//! another is SIGKILLed and started again every few seconds. An agent whose node is gone
//! carries on through the next one, as behind a load balancer. Afterwards every task was
//! completed exactly once, never held by two at a time (read from the event log), and every
//! completion an agent was told about is kept.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use taskyard::domain::Status;

use crate::backend;
use crate::nodes::{call, data_of, Cluster};
use crate::support::{all_events, open_store, ADMIN_TOKEN};

const NODES: usize = 3;
const AGENTS: usize = 64;
const TASKS: usize = 10_000;
/// Kills at least this many times, however fast the work goes.
const MIN_KILLS: usize = 5;

/// Every node's URL, as the agents see them (a restarted node answers on a new port).
type Urls = Arc<Mutex<Vec<String>>>;

/// One agent: claim-next and complete through node `home`, moving on to the next node whenever
/// one does not answer, until `finished`. Returns the completions it was told about.
async fn work(urls: Urls, home: usize, token: String, finished: Arc<AtomicBool>) -> Vec<i64> {
    let http = reqwest::Client::new();
    let mut node = home;
    let mut confirmed = Vec::new();
    let url = |node: usize| urls.lock().unwrap()[node % NODES].clone();
    while !finished.load(Ordering::SeqCst) {
        let claim = json!({"lease_seconds": 3});
        let Some((status, claim)) = call(
            &http,
            &url(node),
            &token,
            Method::POST,
            "/claims/next",
            Some(claim),
        )
        .await
        else {
            node += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if status != StatusCode::OK {
            // Nothing claimable now (the rest is held, or waits to be reaped), or a node that
            // is stopping: look again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let id = claim["task"]["id"].as_i64().unwrap();
        let body = json!({"fence": claim["lease"]["fence"], "summary": "done"});
        let path = format!("/tasks/{id}/complete");
        loop {
            match call(&http, &url(node), &token, Method::POST, &path, Some(body.clone())).await {
                Some((StatusCode::OK, _)) => confirmed.push(id),
                // The lease ran out while its node was down and the task went on without it,
                // or an earlier try committed and its answer was lost with its node.
                Some((StatusCode::CONFLICT, _)) => {}
                // A node that lost its database or is going away: try again elsewhere.
                Some((status, _)) if status.is_server_error() => {
                    node += 1;
                    continue;
                }
                Some((status, body)) => panic!("complete #{id}: {status} {body}"),
                None => {
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
            break;
        }
    }
    confirmed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_under_load_lose_nothing_and_double_nothing() {
    if backend::postgres_only("killing nodes under load") {
        return;
    }
    let reaper = [(
        "lease-reaper.toml",
        "kind = \"lease-reaper\"\nschedule = \"every 1s\"\n",
    )];
    let mut cluster = Cluster::start(NODES, &reaper, None).await;
    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        tokens.push(cluster.agent(i % NODES, &format!("agent-{i}")).await);
    }
    let tasks: Vec<Value> = (0..TASKS)
        .map(|i| json!({"title": format!("task {i}"), "key": format!("k{i}"), "max_attempts": 100}))
        .collect();
    for batch in tasks.chunks(1000) {
        let (status, body) = cluster
            .post(0, ADMIN_TOKEN, "/tasks/batch", json!({"tasks": batch}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Set once every task is completed; the agents stop then.
    let finished = Arc::new(AtomicBool::new(false));
    let urls: Urls = Arc::new(Mutex::new(cluster.nodes.iter().map(|n| n.url.clone()).collect()));
    let agents: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| tokio::spawn(work(urls.clone(), i % NODES, token, finished.clone())))
        .collect();
    let mut kills = 0;
    while kills < MIN_KILLS || !finished.load(Ordering::SeqCst) {
        let pause = rand::thread_rng().gen_range(1_000..3_000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = kills % NODES;
        cluster.kill(victim).await;
        cluster.restart(victim).await;
        urls.lock().unwrap()[victim] = cluster.url(victim).to_string();
        kills += 1;
        let (status, stats) = cluster.get(victim, ADMIN_TOKEN, "/stats").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        if stats["by_status"]["completed"].as_u64() == Some(TASKS as u64) {
            finished.store(true, Ordering::SeqCst);
        }
    }
    let mut confirmed = HashMap::<i64, usize>::new();
    for agent in agents {
        for id in agent.await.unwrap() {
            *confirmed.entry(id).or_default() += 1;
        }
    }
    assert!(
        confirmed.values().all(|n| *n == 1),
        "no completion is confirmed twice"
    );

    // The registry, as every node sees it.
    let store = open_store(data_of(&cluster, 0)).await;
    let mut ids = HashSet::new();
    for i in 0..TASKS {
        let task = store
            .task(&taskyard::domain::TaskRef::parse(&format!("k{i}")))
            .await
            .expect("no task is lost");
        assert_eq!(task.status, Status::Completed, "#{}", task.id);
        ids.insert(task.id);
    }
    assert_eq!(ids.len(), TASKS, "no task is duplicated");
    assert!(confirmed.keys().all(|id| ids.contains(id)));

    // Per task: a claim only while nobody holds it; completed once, by its holder.
    let mut holder: HashMap<i64, String> = HashMap::new();
    let mut completed: HashMap<i64, usize> = HashMap::new();
    let mut expired = 0;
    for event in all_events(&store).await {
        let Some(task) = event.task_id else { continue };
        let data = event.data();
        match event.kind().as_str() {
            "task.claimed" => {
                let who = data["holder"].as_str().unwrap().to_string();
                if let Some(was) = holder.insert(task, who.clone()) {
                    panic!("task #{task} claimed by {who} while {was} held it");
                }
            }
            "task.completed" => {
                let was = holder.remove(&task).expect("completed while held");
                assert_eq!(data["holder"].as_str().unwrap(), was, "#{task}");
                *completed.entry(task).or_default() += 1;
            }
            "task.lease_expired" => {
                expired += 1;
                holder.remove(&task).expect("a lease that expired was held");
            }
            "task.released" | "task.failed" => panic!("unexpected {} of #{task}", event.kind()),
            _ => {}
        }
    }
    assert_eq!(completed.len(), TASKS);
    assert!(
        completed.values().all(|n| *n == 1),
        "every task completed exactly once"
    );
    assert!(holder.is_empty(), "nothing is still held");
    println!(
        "{kills} node kills: {TASKS} tasks completed exactly once ({} completions confirmed), \
         {expired} leases expired on the way",
        confirmed.len()
    );
    store.close().await;
}
