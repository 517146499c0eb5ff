//! Property test of the task state machine: random sequences of operations by several agents
//! and an admin (create with dependencies, claim, claim-next, progress, complete, fail,
//! release, block, unblock, cancel, stale fences) against a real store keep its invariants
//! after every step.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use taskyard::domain::input::{AgentSpec, CompleteTask, CreateTask, ReportProgress};
use taskyard::domain::{Principal, Role, Status, Task, TaskRef};
use taskyard::store::{ClaimFilter, Store};

use crate::support::{event_kinds_by_task, open_store};

const AGENTS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Create {
        priority: u8,
        depends_on: Option<usize>,
    },
    Claim {
        agent: usize,
        task: usize,
    },
    ClaimNext {
        agent: usize,
    },
    Progress {
        agent: usize,
        task: usize,
        stale: bool,
    },
    Complete {
        agent: usize,
        task: usize,
        stale: bool,
    },
    Fail {
        agent: usize,
        task: usize,
        retryable: bool,
    },
    Release {
        agent: usize,
        task: usize,
    },
    Block {
        agent: usize,
        task: usize,
    },
    Unblock {
        task: usize,
    },
    Cancel {
        task: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0..AGENTS;
    let task = 0usize..12;
    prop_oneof![
        3 => (0u8..4, proptest::option::of(0usize..12)).prop_map(|(priority, depends_on)| Op::Create { priority, depends_on }),
        2 => (agent.clone(), task.clone()).prop_map(|(agent, task)| Op::Claim { agent, task }),
        3 => agent.clone().prop_map(|agent| Op::ClaimNext { agent }),
        2 => (agent.clone(), task.clone(), any::<bool>()).prop_map(|(agent, task, stale)| Op::Progress { agent, task, stale }),
        3 => (agent.clone(), task.clone(), any::<bool>()).prop_map(|(agent, task, stale)| Op::Complete { agent, task, stale }),
        1 => (agent.clone(), task.clone(), any::<bool>()).prop_map(|(agent, task, retryable)| Op::Fail { agent, task, retryable }),
        1 => (agent.clone(), task.clone()).prop_map(|(agent, task)| Op::Release { agent, task }),
        1 => (agent.clone(), task.clone()).prop_map(|(agent, task)| Op::Block { agent, task }),
        1 => task.clone().prop_map(|task| Op::Unblock { task }),
        1 => task.prop_map(|task| Op::Cancel { task }),
    ]
}

/// The fence `who` holds on `task`, if any (`stale` asks for an older one).
fn fence_of(task: &Task, who: &Principal, stale: bool) -> Option<i64> {
    task.lease
        .as_ref()
        .filter(|l| l.holder == who.name)
        .map(|l| if stale { l.fence - 1 } else { l.fence })
}

/// Checks every invariant over the whole registry.
async fn check(store: &Store, ids: &[i64]) {
    let mut kinds = event_kinds_by_task(store).await;
    for &id in ids {
        let task = store.task(&TaskRef::Id(id)).await.unwrap();
        let events = kinds.remove(&id).unwrap_or_default();
        let count = |k: &str| events.iter().filter(|e| e.as_str() == k).count() as i64;
        let (fence, _) = store.task_routing(id).await.unwrap();
        assert_eq!(
            count("task.claimed"),
            fence,
            "#{id}: each claim has its event: {events:?}"
        );
        assert!(
            task.attempts <= task.max_attempts,
            "#{id}: attempts within bounds"
        );
        assert_eq!(
            task.status == Status::InProgress,
            task.lease.is_some(),
            "#{id}: lease iff in progress"
        );
        if let Some(lease) = &task.lease {
            assert_eq!(lease.fence, fence, "#{id}: the lease carries the current fence");
        }
        let completed = count("task.completed");
        assert!(completed <= 1, "#{id}: completed at most once: {events:?}");
        assert_eq!(
            task.status == Status::Completed,
            completed == 1,
            "#{id}: {events:?}"
        );
        assert_eq!(task.status == Status::Completed, task.result.is_some(), "#{id}");
        if task.status == Status::Cancelled {
            assert_eq!(
                events.last().map(String::as_str),
                Some("task.cancelled"),
                "#{id}: {events:?}"
            );
        }
        // A task waiting for dependencies has one that is not completed.
        if task.status == Status::Pending {
            let mut open = false;
            for dep in &task.depends_on {
                open |= store.task(&TaskRef::Id(*dep)).await.unwrap().status != Status::Completed;
            }
            assert!(open, "#{id} is pending with every dependency completed");
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    // Retries follow at once (the test config's backoff is zero).
    let store = open_store(dir.path()).await;
    let admin = Principal::admin();
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let spec = AgentSpec {
            name: format!("agent-{i}"),
            kind: "script".into(),
            capabilities: vec![],
            role: Role::Agent,
        };
        let agent = store
            .create_agent(&spec, &format!("{i:064}"), &admin)
            .await
            .unwrap();
        agents.push(Principal {
            agent_id: Some(agent.id),
            name: agent.name,
            role: Role::Agent,
            kind: "script".into(),
            capabilities: vec![],
            scope: None,
        });
    }
    let lease = Duration::from_secs(600);
    let mut ids: Vec<i64> = Vec::new();
    let pick = |ids: &[i64], i: usize| (!ids.is_empty()).then(|| ids[i % ids.len()]);
    for op in ops {
        // Refusals are part of the game; only the invariants matter.
        match op {
            Op::Create { priority, depends_on } => {
                let deps: Vec<serde_json::Value> = depends_on
                    .and_then(|d| pick(&ids, d))
                    .into_iter()
                    .map(|d| json!(d))
                    .collect();
                let body: CreateTask = serde_json::from_value(json!({
                    "title": format!("t{}", ids.len()), "priority": format!("P{priority}"),
                    "depends_on": deps, "max_attempts": 3
                }))
                .unwrap();
                let (task, _) = store.create_task(body.parse().unwrap(), &admin).await.unwrap();
                ids.push(task.id);
            }
            Op::Claim { agent, task } => {
                if let Some(id) = pick(&ids, task) {
                    let _ = store.claim_task(id, &agents[agent], lease).await;
                }
            }
            Op::ClaimNext { agent } => {
                let filter = ClaimFilter {
                    capabilities: vec![],
                    projects: None,
                };
                let _ = store.claim_next(&agents[agent], &filter, lease).await;
            }
            Op::Progress { agent, task, stale } | Op::Complete { agent, task, stale } if !ids.is_empty() => {
                let id = pick(&ids, task).unwrap();
                let who = &agents[agent];
                let current = store.task(&TaskRef::Id(id)).await.unwrap();
                // A holder's older fence, when there is one; else fence 1 (someone else's, or none).
                let held = fence_of(&current, who, stale).filter(|f| *f >= 1);
                let stale = stale && held.is_some();
                let fence = held.unwrap_or(1);
                let result = if matches!(op, Op::Progress { .. }) {
                    let body: ReportProgress =
                        serde_json::from_value(json!({"fence": fence, "percent": 50})).unwrap();
                    store
                        .report_progress(id, who, body.parse().unwrap())
                        .await
                        .map(|_| ())
                } else {
                    let body: CompleteTask =
                        serde_json::from_value(json!({"fence": fence, "summary": "ok"})).unwrap();
                    store.complete(id, who, body.parse().unwrap()).await.map(|_| ())
                };
                if stale {
                    assert!(result.is_err(), "#{id}: a stale fence is refused");
                }
            }
            Op::Fail {
                agent,
                task,
                retryable,
            } => {
                if let Some(id) = pick(&ids, task) {
                    let current = store.task(&TaskRef::Id(id)).await.unwrap();
                    let fence = fence_of(&current, &agents[agent], false).unwrap_or(1);
                    let _ = store
                        .fail(id, &agents[agent], fence, "flaky".into(), retryable)
                        .await;
                }
            }
            Op::Release { agent, task } => {
                if let Some(id) = pick(&ids, task) {
                    let current = store.task(&TaskRef::Id(id)).await.unwrap();
                    let fence = fence_of(&current, &agents[agent], false).unwrap_or(1);
                    let _ = store.release(id, &agents[agent], fence, None).await;
                }
            }
            Op::Block { agent, task } => {
                if let Some(id) = pick(&ids, task) {
                    let current = store.task(&TaskRef::Id(id)).await.unwrap();
                    let fence = fence_of(&current, &agents[agent], false);
                    let _ = store
                        .block(id, &agents[agent], fence, "needs a decision".into())
                        .await;
                }
            }
            Op::Unblock { task } => {
                if let Some(id) = pick(&ids, task) {
                    let _ = store.unblock(id, &admin, None).await;
                }
            }
            Op::Cancel { task } => {
                if let Some(id) = pick(&ids, task) {
                    let _ = store.cancel_task(id, &admin, None).await;
                }
            }
            Op::Progress { .. } | Op::Complete { .. } => {}
        }
        check(&store, &ids).await;
    }
    store.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_state_machine_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}
