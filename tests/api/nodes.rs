//! Several nodes on one PostgreSQL database: real `taskyard serve` children, each on a data
//! folder of its own, sharing the registry. This file holds the harness and what two nodes
//! see of each other: the node list and its one leader, a long poll on one node woken by work
//! created on another, every node's events on every node's SSE stream in one order (resumable
//! anywhere), and a node id in use refused. (A dashboard session opened on one server used on
//! another: `logins.rs`.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::backend;
use crate::events::{read_events, read_until_task};
use crate::support::{serve_child, ADMIN_TOKEN};

/// A node: a `taskyard serve` child.
pub(crate) struct Node {
    pub child: tokio::process::Child,
    pub url: String,
    pub data: PathBuf,
    /// Its loops folder and config file, kept for restarts.
    loops: PathBuf,
    config: Option<PathBuf>,
}

/// Nodes sharing one database, all under `root`: node `i` keeps its data in `root/node-i`.
pub(crate) struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: Vec<Node>,
    http: reqwest::Client,
}

impl Cluster {
    /// `count` nodes with the loops of `loops` (file name → TOML; none when empty) and the
    /// config file text `config` (if any), started one after the other.
    pub async fn start(count: usize, loops: &[(&str, &str)], config: Option<&str>) -> Cluster {
        Self::start_on(count, loops, config, None).await
    }

    /// [`Cluster::start`] on the database `database` when given (else a fresh one of the run).
    pub async fn start_on(
        count: usize,
        loops: &[(&str, &str)],
        config: Option<&str>,
        database: Option<&str>,
    ) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let loops_dir = root.path().join("loops");
        std::fs::create_dir_all(&loops_dir).unwrap();
        for (name, text) in loops {
            std::fs::write(loops_dir.join(name), text).unwrap();
        }
        let config = config.map(|text| {
            let path = root.path().join("taskyard.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        let mut cluster = Cluster {
            nodes: Vec::new(),
            http: reqwest::Client::new(),
            root,
        };
        for i in 0..count {
            let data = cluster.root.path().join(format!("node-{i}"));
            match (database, i) {
                (Some(url), _) => backend::use_database(&data, url),
                (None, 0) => {}
                (None, _) => backend::share_database(&cluster.root.path().join("node-0"), &data),
            }
            let node = Node::boot(data, loops_dir.clone(), config.clone()).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Node `i`'s URL.
    pub fn url(&self, i: usize) -> &str {
        &self.nodes[i].url
    }

    /// A request to node `i` as `token`; `None` when the node did not answer.
    pub async fn call(
        &self,
        i: usize,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(StatusCode, Value)> {
        call(&self.http, self.url(i), token, method, path, body).await
    }

    /// POST to node `i`, which must answer.
    pub async fn post(&self, i: usize, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(i, token, reqwest::Method::POST, path, Some(body))
            .await
            .unwrap_or_else(|| panic!("node {i} answers POST {path}"))
    }

    /// GET from node `i`, which must answer.
    pub async fn get(&self, i: usize, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(i, token, reqwest::Method::GET, path, None)
            .await
            .unwrap_or_else(|| panic!("node {i} answers GET {path}"))
    }

    /// Node `i`'s id, as its `/healthz` says.
    pub async fn node_id(&self, i: usize) -> String {
        let health: Value = reqwest::get(format!("{}/healthz", self.url(i)))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["node"]
            .as_str()
            .expect("healthz names the node")
            .to_string()
    }

    /// The node list as node `i` serves it.
    pub async fn node_list(&self, i: usize) -> Vec<Value> {
        let (status, body) = self.get(i, ADMIN_TOKEN, "/nodes").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["nodes"].as_array().unwrap().clone()
    }

    /// The id of the leader node `i` sees, once there is one (60 s at most).
    pub async fn leader_seen_by(&self, i: usize) -> String {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let list = self.node_list(i).await;
                if let Some(leader) = list.iter().find(|n| n["leader"] == true) {
                    return leader["id"].as_str().unwrap().to_string();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("a node leads")
    }

    /// Waits (60 s at most) until node `i` sees node `id` lead.
    pub async fn wait_for_leader(&self, i: usize, id: &str) {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let list = self.node_list(i).await;
                if list.iter().any(|n| n["id"] == id && n["leader"] == true) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id} never led"))
    }

    /// SIGKILLs node `i` and waits for it to be gone.
    pub async fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.child.start_kill().unwrap();
        node.child.wait().await.unwrap();
    }

    /// Starts node `i` again on its data folder (it keeps its node id).
    pub async fn restart(&mut self, i: usize) {
        let node = &self.nodes[i];
        let (data, loops, config) = (node.data.clone(), node.loops.clone(), node.config.clone());
        self.nodes[i] = Node::boot(data, loops, config).await;
    }

    /// An agent made through node `i`; returns its token.
    pub async fn agent(&self, i: usize, name: &str) -> String {
        let (status, body) = self.post(i, ADMIN_TOKEN, "/agents", json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// Waits (60 s at most) until task `id`, read through node `i`, passes `done`.
    pub async fn wait_for_task(&self, i: usize, id: i64, done: impl Fn(&Value) -> bool) -> Value {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let (status, task) = self.get(i, ADMIN_TOKEN, &format!("/tasks/{id}")).await;
                assert_eq!(status, StatusCode::OK, "{task}");
                if done(&task) {
                    return task;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("task #{id} never got there"))
    }
}

impl Node {
    async fn boot(data: PathBuf, loops: PathBuf, config: Option<PathBuf>) -> Node {
        let env: Vec<(&str, &std::ffi::OsStr)> = config
            .as_deref()
            .map(|c| ("TASKYARD_CONFIG", c.as_os_str()))
            .into_iter()
            .collect();
        let (child, url) = serve_child(&data, &loops, &env).await;
        Node {
            child,
            url,
            data,
            loops,
            config,
        }
    }
}

/// A request to the node at `url`; `None` when it did not answer.
pub(crate) async fn call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Option<(StatusCode, Value)> {
    let mut request = http
        .request(method, format!("{url}/api/v1{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.ok()?;
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// The data folder of node `i` of `cluster`, for opening its registry directly.
pub(crate) fn data_of(cluster: &Cluster, i: usize) -> &Path {
    &cluster.nodes[i].data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_list_each_other_under_one_leader() {
    if backend::postgres_only("listing nodes") {
        return;
    }
    let cluster = Cluster::start(2, &[], None).await;
    let (a, b) = (cluster.node_id(0).await, cluster.node_id(1).await);
    assert_ne!(a, b, "each node has an id of its own");
    let list = cluster.node_list(1).await;
    let ids: Vec<&str> = list.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()], "{list:?}");
    assert!(list.iter().all(|n| n["version"] == env!("CARGO_PKG_VERSION")));
    assert!(list.iter().all(|n| n["last_heartbeat"].is_string()));
    // The first to boot took the lease, and keeps it while it beats.
    assert_eq!(cluster.leader_seen_by(1).await, a);
    assert_eq!(list.iter().filter(|n| n["leader"] == true).count(), 1, "{list:?}");
    // A node's id is kept in its data folder: it is the same after a restart.
    let kept = std::fs::read_to_string(data_of(&cluster, 0).join("node-id")).unwrap();
    assert_eq!(kept.trim(), a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_node_gets_work_created_on_another_and_its_stream_shows_it() {
    if backend::postgres_only("waking a long poll from another node") {
        return;
    }
    let cluster = Cluster::start(2, &[], None).await;
    let token = cluster.agent(1, "waiter").await;
    // Node 0's event stream, opened before anything happens.
    let stream = reqwest::Client::new()
        .get(format!("{}/api/v1/events", cluster.url(0)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let poll = {
        let (url, token) = (cluster.url(0).to_string(), token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let answer = call(
                &http,
                &url,
                &token,
                reqwest::Method::POST,
                "/claims/next",
                Some(json!({"wait_seconds": 60})),
            )
            .await
            .expect("node 0 answers the long poll");
            (answer, Instant::now())
        })
    };
    // The poll is waiting on node 0 once node 0 counts it.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if metric(&cluster, 0, "taskyard_long_polls").await == 1.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the long poll waits on node 0");
    let hints = metric(&cluster, 0, "taskyard_node_hints_total").await;
    let (status, task) = cluster
        .post(1, ADMIN_TOKEN, "/tasks", json!({"title": "made on node 1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let created = Instant::now();
    let ((status, claim), answered) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{claim}");
    assert_eq!(claim["task"]["id"], task["id"], "the poll got the new task");
    println!(
        "a long poll on node 0 got node 1's task {} ms after it was created",
        answered.duration_since(created).as_millis()
    );
    // Node 1's change reached node 0's stream.
    assert_eq!(read_until_task(stream, &task["id"]).await, "task.created");
    // ...and node 0 heard of it through a hint, not only by its poll of every second.
    tokio::time::timeout(Duration::from_secs(60), async {
        while metric(&cluster, 0, "taskyard_node_hints_total").await <= hints {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("node 0 heard node 1's hint");
    assert_eq!(metric(&cluster, 1, "taskyard_leader").await, 0.0);
    assert_eq!(metric(&cluster, 0, "taskyard_leader").await, 1.0);
}

/// The value of the unlabelled metric `name` on node `i`.
pub(crate) async fn metric(cluster: &Cluster, i: usize, name: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", cluster.url(i)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not among node {i}'s metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_with_a_node_id_in_use_refuses_to_start() {
    if backend::postgres_only("node ids in use") {
        return;
    }
    let cluster = Cluster::start(1, &[], None).await;
    // Another data folder on the same database, holding the running node's id.
    let twin = cluster.root.path().join("twin");
    backend::share_database(data_of(&cluster, 0), &twin);
    std::fs::copy(data_of(&cluster, 0).join("node-id"), twin.join("node-id")).unwrap();
    let loops = twin.join("no-loops");
    std::fs::create_dir_all(&loops).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&twin)
        .arg("--loops-dir")
        .arg(&loops)
        .env("TASKYARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TASKYARD_DATABASE_URL", backend::database_url(&twin).unwrap())
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the twin stops by itself")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another running server"), "{err}");
    // The running node still leads, undisturbed.
    assert_eq!(cluster.leader_seen_by(0).await, cluster.node_id(0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_streams_every_nodes_events_in_one_order_and_resumes() {
    if backend::postgres_only("streaming events across nodes") {
        return;
    }
    let cluster = Cluster::start(2, &[], None).await;
    let http = reqwest::Client::new();
    let open = |i: usize, last: Option<i64>| {
        let mut request = http
            .get(format!("{}/api/v1/events?kinds=task.*", cluster.url(i)))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(id) = last {
            request = request.header("last-event-id", id.to_string());
        }
        request.send()
    };
    let (a, b) = (open(0, None).await.unwrap(), open(1, None).await.unwrap());
    // Tasks made through both nodes, interleaved, some at the same moment.
    let made = (0..20).map(|i| {
        cluster.post(
            i % 2,
            ADMIN_TOKEN,
            "/tasks",
            json!({"title": format!("task {i}")}),
        )
    });
    for (status, task) in futures::future::join_all(made).await {
        assert_eq!(status, StatusCode::CREATED, "{task}");
    }
    let (on_a, on_b) = (read_events(a, 20).await, read_events(b, 20).await);
    let ids = |seen: &[(i64, String, Value)]| seen.iter().map(|(id, _, _)| *id).collect::<Vec<_>>();
    assert_eq!(
        ids(&on_a),
        ids(&on_b),
        "both nodes stream the same events in the same order"
    );
    assert!(ids(&on_a).windows(2).all(|w| w[0] < w[1]), "{:?}", ids(&on_a));
    assert!(on_a.iter().all(|(_, kind, _)| kind == "task.created"));
    // Resuming on node 1 from the middle of what node 0 streamed gives the rest, in order.
    let middle = on_a[9].0;
    let rest = read_events(open(1, Some(middle)).await.unwrap(), 10).await;
    assert_eq!(ids(&rest), ids(&on_a)[10..].to_vec());
}
