//! Property test: whatever state random operations leave a task in, `why`'s `claimable` is
//! exactly whether claim-next by an agent with the task's capabilities hands it out. Each task
//! lives in a project of its own, so claim-next can be asked about it alone.

use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::routing::{always_overloaded, sample_the_host};
use crate::support::Server;

#[derive(Debug, Clone)]
enum Op {
    Create {
        priority: u8,
        kind: &'static str,
        route: &'static str,
        backend: bool,
        max_attempts: u8,
    },
    Claim {
        task: usize,
        by_admin: bool,
    },
    Fail {
        task: usize,
        retryable: bool,
    },
    Release {
        task: usize,
    },
    Block {
        task: usize,
    },
    Unblock {
        task: usize,
    },
    Cancel {
        task: usize,
    },
    LowerAttempts {
        task: usize,
    },
    Reroute {
        task: usize,
    },
    Assign,
}

fn op() -> impl Strategy<Value = Op> {
    let task = 0usize..8;
    prop_oneof![
        4 => (0u8..4, prop_oneof![Just("implementation"), Just("architecture")],
              prop_oneof![Just("auto"), Just("auto"), Just("agent"), Just("human"), Just("spawn")],
              any::<bool>(), 1u8..4)
            .prop_map(|(priority, kind, route, backend, max_attempts)| Op::Create { priority, kind, route, backend, max_attempts }),
        2 => (task.clone(), any::<bool>()).prop_map(|(task, by_admin)| Op::Claim { task, by_admin }),
        2 => (task.clone(), any::<bool>()).prop_map(|(task, retryable)| Op::Fail { task, retryable }),
        1 => task.clone().prop_map(|task| Op::Release { task }),
        1 => task.clone().prop_map(|task| Op::Block { task }),
        1 => task.clone().prop_map(|task| Op::Unblock { task }),
        1 => task.clone().prop_map(|task| Op::Cancel { task }),
        1 => task.clone().prop_map(|task| Op::LowerAttempts { task }),
        1 => task.prop_map(|task| Op::Reroute { task }),
        3 => Just(Op::Assign),
    ]
}

/// How the server is set up: the spawner off, or on with the host always overloaded (so spawns
/// wait and no process ever starts); retries backing off for an hour, or not at all.
#[derive(Debug, Clone, Copy)]
struct Setup {
    spawner: bool,
    backoff: bool,
}

async fn boot(setup: Setup) -> Server {
    let server = Server::start_with(|c| {
        c.server.retry_backoff_seconds = if setup.backoff { 3600 } else { 0 };
        always_overloaded(c);
        if !setup.spawner {
            c.agent_types.clear();
        }
    })
    .await;
    sample_the_host(&server).await;
    server
}

/// The fence of the task's current lease, if it has one.
async fn fence(server: &Server, id: i64) -> Option<i64> {
    let (_, task) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    task["lease"]["fence"].as_i64()
}

async fn run(setup: Setup, ops: Vec<Op>) {
    let server = boot(setup).await;
    let worker = server.agent("worker", &["backend"]).await;
    let checker = server.agent("checker", &["backend"]).await;
    let admin = server.admin.clone();
    let mut ids: Vec<i64> = Vec::new();
    let pick = |ids: &[i64], i: usize| (!ids.is_empty()).then(|| ids[i % ids.len()]);
    for op in ops {
        // Refusals are part of the game; only the final agreement matters.
        match op {
            Op::Create {
                priority,
                kind,
                route,
                backend,
                max_attempts,
            } => {
                let caps: Vec<&str> = if backend { vec!["backend"] } else { vec![] };
                let task = server
                    .task(
                        json!({"title": format!("t{}", ids.len()), "project": format!("p{}", ids.len()),
                                 "priority": format!("P{priority}"), "kind": kind, "route": route,
                                 "capabilities": caps, "max_attempts": max_attempts}),
                    )
                    .await;
                ids.push(task["id"].as_i64().unwrap());
            }
            Op::Claim { task, by_admin } => {
                if let Some(id) = pick(&ids, task) {
                    let who = if by_admin { &admin } else { &worker };
                    server.post(who, &format!("/tasks/{id}/claim"), json!({})).await;
                }
            }
            Op::Fail { task, retryable } => {
                if let Some(id) = pick(&ids, task) {
                    if let Some(fence) = fence(&server, id).await {
                        let body = json!({"fence": fence, "reason": "flaky", "retryable": retryable});
                        server.post(&admin, &format!("/tasks/{id}/fail"), body).await;
                    }
                }
            }
            Op::Release { task } => {
                if let Some(id) = pick(&ids, task) {
                    if let Some(fence) = fence(&server, id).await {
                        server
                            .post(&admin, &format!("/tasks/{id}/release"), json!({"fence": fence}))
                            .await;
                    }
                }
            }
            Op::Block { task } => {
                if let Some(id) = pick(&ids, task) {
                    let mut body = json!({"reason": "a question"});
                    if let Some(fence) = fence(&server, id).await {
                        body["fence"] = json!(fence);
                    }
                    server.post(&admin, &format!("/tasks/{id}/block"), body).await;
                }
            }
            Op::Unblock { task } => {
                if let Some(id) = pick(&ids, task) {
                    server
                        .post(&admin, &format!("/tasks/{id}/unblock"), json!({}))
                        .await;
                }
            }
            Op::Cancel { task } => {
                if let Some(id) = pick(&ids, task) {
                    server
                        .post(&admin, &format!("/tasks/{id}/cancel"), json!({}))
                        .await;
                }
            }
            Op::LowerAttempts { task } => {
                if let Some(id) = pick(&ids, task) {
                    server
                        .patch(&admin, &format!("/tasks/{id}"), json!({"max_attempts": 1}))
                        .await;
                }
            }
            Op::Reroute { task } => {
                if let Some(id) = pick(&ids, task) {
                    server
                        .post(&admin, &format!("/tasks/{id}/reroute"), json!({}))
                        .await;
                }
            }
            Op::Assign => {
                server.loops.context().spawner.assign().await.unwrap();
            }
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let (_, why) = server.get(&admin, &format!("/tasks/{id}/why")).await;
        let (status, claim) = server
            .post(&checker, "/claims/next", json!({"projects": [format!("p{i}")]}))
            .await;
        let claimed = match status {
            StatusCode::OK => {
                assert_eq!(claim["task"]["id"], *id, "each task is alone in its project");
                true
            }
            StatusCode::NO_CONTENT => false,
            other => panic!("claim-next answered {other}: {claim}"),
        };
        let (_, task): (_, Value) = server.get(&admin, &format!("/tasks/{id}")).await;
        assert_eq!(
            why["claimable"].as_bool(),
            Some(claimed),
            "#{id}: why says {why}\nbut claim-next {}; the task: {task}",
            if claimed { "handed it out" } else { "did not" }
        );
    }
    server.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn why_claimable_is_what_claim_next_does(
        spawner in any::<bool>(),
        backoff in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(Setup { spawner, backoff }, ops));
    }
}
