//! Two nodes while their PostgreSQL server stops and starts again: meanwhile both answer
//! `503 unavailable`; afterwards, with nobody restarting them, a node leads again and a long
//! poll on one node is woken by a hint of work created on the other (the listener connected
//! again by itself).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::backend;
use crate::cluster::Cluster as Database;
use crate::nodes::{call, metric, Cluster};
use crate::support::ADMIN_TOKEN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_ride_out_a_database_restart() {
    if backend::postgres_only("a database restart under several nodes") {
        return;
    }
    let Some(database) = Database::start() else { return };
    let cluster = Cluster::start_on(2, &[], None, Some(&database.url())).await;
    let token = cluster.agent(1, "patient").await;
    assert!(!cluster.leader_seen_by(1).await.is_empty());

    database.down();
    for i in 0..2 {
        let (status, body) = cluster.get(i, ADMIN_TOKEN, "/tasks").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], "unavailable", "{body}");
    }
    database.up();

    // Both come back by themselves, under a leader.
    for i in 0..2 {
        tokio::time::timeout(Duration::from_secs(60), async {
            while cluster.get(i, ADMIN_TOKEN, "/tasks").await.0 != StatusCode::OK {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the node answers again");
    }
    assert!(!cluster.leader_seen_by(0).await.is_empty());
    // A long poll on node 0 gets a task created on node 1 (by a hint, or by its own look).
    let poll = {
        let (url, token) = (cluster.url(0).to_string(), token.clone());
        tokio::spawn(async move {
            let body = json!({"wait_seconds": 60});
            call(
                &reqwest::Client::new(),
                &url,
                &token,
                reqwest::Method::POST,
                "/claims/next",
                Some(body),
            )
            .await
        })
    };
    let (status, task) = cluster
        .post(1, ADMIN_TOKEN, "/tasks", json!({"title": "after the restart"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let (status, claim) = poll.await.unwrap().expect("node 0 answers");
    assert_eq!(status, StatusCode::OK, "{claim}");
    assert_eq!(claim["task"]["id"], task["id"]);
    // Node 0 listens again by itself: node 1's changes reach it as hints (once it listens,
    // which may be a moment after the database is back).
    let hints = metric(&cluster, 0, "taskyard_node_hints_total").await;
    tokio::time::timeout(Duration::from_secs(60), async {
        while metric(&cluster, 0, "taskyard_node_hints_total").await <= hints {
            let (status, body) = cluster
                .post(1, ADMIN_TOKEN, "/tasks", json!({"title": "is anyone listening?"}))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("node 0 hears node 1's hints again");
}
