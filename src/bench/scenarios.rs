//! The benchmark scenarios: each drives a server over real HTTP and reports what it measured.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::client::Client;

use super::server::BenchServer;
use super::stats::{summarise, Summary};

/// Creates `n` tasks through the batch API, `per_call` at a time, `parallel` calls at once.
pub async fn seed(admin: &Client, n: usize, project: &str, parallel: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let batches: Vec<usize> = (0..n).step_by(1000).collect();
    let mut stream = futures::stream::iter(batches.into_iter().map(|from| {
        let admin = admin.clone();
        let project = project.to_string();
        async move {
            let tasks: Vec<Value> = (from..(from + 1000).min(n))
                .map(|i| json!({"title": format!("bench task {i}"), "project": project, "priority": format!("P{}", 2 + i % 2)}))
                .collect();
            admin.post("/tasks/batch", &json!({"tasks": tasks})).await
        }
    }))
    .buffer_unordered(parallel);
    while let Some(result) = stream.next().await {
        result?;
    }
    Ok(started.elapsed())
}

/// Registers `n` agents and returns clients for them.
pub async fn agents(server: &BenchServer, prefix: &str, n: usize) -> anyhow::Result<Vec<Client>> {
    let admin = server.admin();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let created = admin
            .post(
                "/agents",
                &json!({"name": format!("{prefix}-{i}"), "kind": "script"}),
            )
            .await?
            .unwrap_or_default();
        let token = created["token"].as_str().unwrap_or_default().to_string();
        // Spread over the nodes, as a load balancer would.
        out.push(Client::new(&server.nodes[i % server.nodes.len()], Some(token)));
    }
    Ok(out)
}

/// What a run of work cycles (claim-next → complete, or with progress between) measured.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    /// Agents.
    pub agents: usize,
    /// Cycles completed.
    pub cycles: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Cycles per second.
    pub cycles_per_second: f64,
    /// Claim-next latency.
    pub claim: Summary,
    /// Progress latency, when the cycle reported progress.
    pub progress: Option<Summary>,
    /// Complete latency.
    pub complete: Summary,
    /// Calls that failed.
    pub errors: usize,
    /// Tasks completed more than once (must be 0).
    pub duplicates: usize,
}

/// `agents` agents each loop claim-next → complete (→ progress → complete with `with_progress`)
/// until there is no work or `max_cycles` cycles are done in total.
pub async fn cycles(
    clients: &[Client],
    project: &str,
    max_cycles: usize,
    with_progress: bool,
) -> CycleReport {
    #[derive(Default)]
    struct Shared {
        claim: Vec<Duration>,
        progress: Vec<Duration>,
        complete: Vec<Duration>,
        done: Vec<i64>,
        errors: usize,
    }
    let shared = Arc::new(Mutex::new(Shared::default()));
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(max_cycles));
    let started = Instant::now();
    let mut workers = Vec::new();
    for client in clients {
        let client = client.clone();
        let shared = shared.clone();
        let budget = budget.clone();
        let body = json!({"projects": [project]});
        workers.push(tokio::spawn(async move {
            let (mut claim, mut progress, mut complete, mut done, mut errors) =
                (vec![], vec![], vec![], vec![], 0);
            while budget
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |b| b.checked_sub(1),
                )
                .is_ok()
            {
                let t = Instant::now();
                let got = client.post("/claims/next", &body).await;
                claim.push(t.elapsed());
                let c = match got {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                let id = c["task"]["id"].as_i64().unwrap_or_default();
                let fence = c["lease"]["fence"].clone();
                if with_progress {
                    let t = Instant::now();
                    if client
                        .post(
                            &format!("/tasks/{id}/progress"),
                            &json!({"fence": fence, "percent": 50}),
                        )
                        .await
                        .is_err()
                    {
                        errors += 1;
                    }
                    progress.push(t.elapsed());
                }
                let t = Instant::now();
                match client
                    .post(
                        &format!("/tasks/{id}/complete"),
                        &json!({"fence": fence, "summary": "bench"}),
                    )
                    .await
                {
                    Ok(_) => done.push(id),
                    Err(_) => errors += 1,
                }
                complete.push(t.elapsed());
            }
            let mut s = shared.lock().await;
            s.claim.extend(claim);
            s.progress.extend(progress);
            s.complete.extend(complete);
            s.done.extend(done);
            s.errors += errors;
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut s = shared.lock().await;
    let unique: HashSet<i64> = s.done.iter().copied().collect();
    CycleReport {
        agents: clients.len(),
        cycles: s.done.len(),
        seconds,
        cycles_per_second: s.done.len() as f64 / seconds,
        claim: summarise(&mut s.claim),
        progress: with_progress.then(|| summarise(&mut s.progress)),
        complete: summarise(&mut s.complete),
        errors: s.errors,
        duplicates: s.done.len() - unique.len(),
    }
}

/// What the long-poll scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct LongPollReport {
    /// Waiting agents.
    pub agents: usize,
    /// Server CPU (percent of one core) while they all waited with no work.
    pub idle_cpu_percent: f32,
    /// Tasks trickled in.
    pub tasks: usize,
    /// From a task's creation to an agent holding it.
    pub pickup: Summary,
    /// Server CPU time per created task that no waiting agent can take, in milliseconds:
    /// before the agents started waiting, and while they all waited.
    pub unmatched_create_cpu_ms: UnmatchedCost,
}

/// Server CPU time per create that matches no waiting agent (`None` against a server the
/// benchmark did not start).
#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedCost {
    /// With no agent waiting.
    pub no_waiters: Option<f64>,
    /// With every agent waiting.
    pub all_waiting: Option<f64>,
}

/// Creates `n` tasks in a project no agent asks for; the server's CPU milliseconds per create.
async fn unmatched_creates(server: &mut BenchServer, n: usize) -> anyhow::Result<Option<f64>> {
    let admin = server.admin();
    let before = server.cpu_ms();
    for i in 0..n {
        admin
            .post(
                "/tasks",
                &json!({"title": format!("nobody's {i}"), "project": "unmatched"}),
            )
            .await?;
    }
    // Let wake-ups the creates caused run their course.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(before
        .zip(server.cpu_ms())
        .map(|(before, after)| after.saturating_sub(before) as f64 / n as f64))
}

/// Tasks created to measure what a create nobody can take costs.
const UNMATCHED: usize = 100;

/// `clients` long-poll claim-next while `tasks` tasks trickle in one every `gap`; before and
/// while they wait, creates that match none of them measure what a waiter costs the server.
pub async fn long_poll(
    server: &mut BenchServer,
    clients: &[Client],
    tasks: usize,
    gap: Duration,
) -> anyhow::Result<LongPollReport> {
    let no_waiters = unmatched_creates(server, UNMATCHED).await?;
    let created: Arc<Mutex<HashMap<i64, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let pickups: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(tasks));
    let mut waiters = Vec::new();
    for client in clients {
        let client = client.clone();
        let (created, pickups, remaining) = (created.clone(), pickups.clone(), remaining.clone());
        waiters.push(tokio::spawn(async move {
            while remaining.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                match client
                    .post(
                        "/claims/next",
                        &json!({"wait_seconds": 60, "projects": ["trickle"]}),
                    )
                    .await
                {
                    Ok(Some(c)) => {
                        let at = Instant::now();
                        let id = c["task"]["id"].as_i64().unwrap_or_default();
                        let since = loop {
                            if let Some(t) = created.lock().await.get(&id).copied() {
                                break t;
                            }
                            tokio::task::yield_now().await;
                        };
                        pickups.lock().await.push(at - since);
                        remaining.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        let fence = c["lease"]["fence"].clone();
                        let _ = client
                            .post(
                                &format!("/tasks/{id}/complete"),
                                &json!({"fence": fence, "summary": "ok"}),
                            )
                            .await;
                    }
                    Ok(None) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
    }
    // Let every agent settle into its wait, then measure the idle cost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.usage();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu_percent = server.usage().map(|(_, cpu)| cpu).unwrap_or(f32::NAN);
    let all_waiting = unmatched_creates(server, UNMATCHED).await?;
    let admin = server.admin();
    for i in 0..tasks {
        let mut map = created.lock().await;
        let t = Instant::now();
        let task = admin
            .post(
                "/tasks",
                &json!({"title": format!("trickle {i}"), "project": "trickle"}),
            )
            .await?
            .unwrap_or_default();
        map.insert(task["id"].as_i64().unwrap_or_default(), t);
        drop(map);
        tokio::time::sleep(gap).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while remaining.load(std::sync::atomic::Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in waiters {
        w.abort();
    }
    let mut pickups = pickups.lock().await;
    Ok(LongPollReport {
        agents: clients.len(),
        idle_cpu_percent,
        tasks,
        pickup: summarise(&mut pickups),
        unmatched_create_cpu_ms: UnmatchedCost {
            no_waiters,
            all_waiting,
        },
    })
}

/// From a P0 task's creation to its agent's start (`run.started`), by the server's clock.
pub async fn spawn_latency(admin: &Client, n: usize) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let task = admin
            .post(
                "/tasks",
                &json!({"title": format!("urgent {i}"), "priority": "P0", "project": "spawn"}),
            )
            .await?
            .unwrap_or_default();
        let id = task["id"].as_i64().unwrap_or_default();
        let created = parse_time(&task["created_at"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let detail = admin.get(&format!("/tasks/{id}")).await?;
            let started = detail["events"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["kind"] == "run.started")
                .cloned();
            if let (Some(e), Some(created)) = (started, created) {
                if let Some(at) = parse_time(&e["at"]) {
                    samples.push(Duration::from_millis((at - created).max(0) as u64));
                }
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "task #{id} was not spawned within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(summarise(&mut samples))
}

fn parse_time(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// From a task's creation request to its `task.created` event arriving over SSE.
pub async fn sse_latency(server: &BenchServer, n: usize) -> anyhow::Result<Summary> {
    let admin = server.admin();
    let mut stream = admin
        .stream("/api/v1/events")
        .await
        .map_err(anyhow::Error::from)?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let reader = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut buffer = String::new();
            while samples.len() < n {
                let Some(Ok(chunk)) = stream.next().await else {
                    break;
                };
                let at = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let message: String = buffer.drain(..end + 2).collect();
                    let data = message
                        .lines()
                        .find_map(|l| l.strip_prefix("data:"))
                        .map(str::trim)
                        .unwrap_or("");
                    let Ok(event) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    if event["kind"] != "task.created" {
                        continue;
                    }
                    let title = event["data"]["title"].as_str().unwrap_or("").to_string();
                    if let Some(t) = sent.lock().await.get(&title) {
                        samples.push(at - *t);
                    }
                }
            }
            samples
        })
    };
    for i in 0..n {
        let title = format!("sse {i}");
        sent.lock().await.insert(title.clone(), Instant::now());
        admin
            .post("/tasks", &json!({"title": title, "project": "sse"}))
            .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut samples = tokio::time::timeout(Duration::from_secs(30), reader).await??;
    Ok(summarise(&mut samples))
}
