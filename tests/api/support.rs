//! Booting a real server on port 0 with a fresh data folder, and small HTTP helpers.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use taskyard::config::Config;
use taskyard::App;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server.
pub struct Server {
    pub url: String,
    /// The address it listens on (the `url` names `server.public_url` when that is set).
    pub addr: std::net::SocketAddr,
    pub admin: String,
    pub app_store: taskyard::store::Store,
    pub loops: std::sync::Arc<taskyard::loops::Loops>,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<TempDir>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A config for tests: port 0, the given data folder, no retry backoff unless changed, and no
/// scheduled loops (no built-in ones, an empty loops folder), so nothing changes behind a
/// test's back.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::default();
    config.server.builtin_loops = false;
    config.server.loops_dir = data_dir.join("no-loops");
    std::fs::create_dir_all(&config.server.loops_dir).unwrap();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.server.data_dir = data_dir.to_path_buf();
    config.server.admin_token = Some(taskyard::config::Secret::new(ADMIN_TOKEN));
    config.server.retry_backoff_seconds = 0;
    config.server.database_url =
        crate::backend::database_url(data_dir).map(|url| taskyard::config::DatabaseUrl::parse(&url).unwrap());
    config
}

/// The registry of data folder `data_dir` opened directly, as the server opens it with the
/// test config (on the backend the suite runs against).
pub async fn open_store(data_dir: &Path) -> taskyard::store::Store {
    taskyard::app::open_store(&test_config(data_dir))
        .await
        .expect("the registry opens")
}

impl Server {
    /// A server on a fresh temporary data folder.
    pub async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    /// A server on a fresh temporary data folder, with config changes.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let mut server = Self::boot(config).await;
        server._dir = Some(dir);
        server
    }

    /// A server with exactly this config (its data folder is kept).
    pub async fn boot(config: Config) -> Server {
        let app = App::build(config).await.expect("server boots");
        let url = app.url().to_string();
        let addr = app.local_addr();
        let app_store = app.store().clone();
        let loops = app.loops();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        // Serving begins once boot's reconciliation (runs, worktrees) is over: a test that
        // touched what it reconciles before that would race it.
        wait_until_up(&format!("http://{addr}/healthz"), "the server").await;
        Server {
            url,
            addr,
            admin: ADMIN_TOKEN.to_string(),
            app_store,
            loops,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap(),
            stop: Some(stop),
            handle: Some(handle),
            _dir: None,
        }
    }

    /// Stops the server gracefully; returns the temporary folder so it outlives the server.
    pub async fn stop(mut self) -> Option<TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().expect("server stops cleanly");
        }
        self._dir.take()
    }

    /// Calls the API; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = if path.starts_with('/') && !path.starts_with("/api") && !path.starts_with("/healthz") {
            format!("{}/api/v1{path}", self.url)
        } else {
            format!("{}{path}", self.url)
        };
        let mut req = self.http.request(method, url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.bytes().await.unwrap();
        if !status.is_success() && status != StatusCode::NO_CONTENT {
            assert_eq!(
                content_type,
                "application/problem+json",
                "errors are problem+json: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Some(token), Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Some(token), Method::PATCH, path, Some(body)).await
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(Some(token), Method::GET, path, None).await
    }

    /// Creates a task as admin and returns it.
    pub async fn task(&self, body: Value) -> Value {
        let (status, task) = self.post(&self.admin, "/tasks", body).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task
    }

    /// Registers an agent and returns its token.
    pub async fn agent(&self, name: &str, capabilities: &[&str]) -> String {
        self.agent_with_role(name, capabilities, "agent").await
    }

    /// Registers an agent with a role and returns its token.
    pub async fn agent_with_role(&self, name: &str, capabilities: &[&str], role: &str) -> String {
        let (status, body) = self
            .post(
                &self.admin,
                "/agents",
                json!({"name": name, "capabilities": capabilities, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// Every event, oldest first (read through the store, not the API, as ground truth).
    pub async fn all_events(&self) -> Vec<taskyard::domain::Event> {
        all_events(&self.app_store).await
    }

    /// A snapshot of every task (through the API, as admin), by id.
    pub async fn all_tasks(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/tasks?limit=500&cursor={c}"),
                None => "/tasks?limit=500".to_string(),
            };
            let (status, page) = self.get(&self.admin, &path).await;
            assert_eq!(status, StatusCode::OK);
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        out.sort_by_key(|t| t["id"].as_i64());
        out
    }
}

/// Every event in `store`, oldest first.
pub async fn all_events(store: &taskyard::store::Store) -> Vec<taskyard::domain::Event> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.events_after(after, 1000).await.unwrap();
        let Some(last) = batch.last() else {
            return out;
        };
        after = last.id;
        out.extend(batch);
    }
}

/// The kinds of every task's events, oldest first, by task id.
pub async fn event_kinds_by_task(
    store: &taskyard::store::Store,
) -> std::collections::HashMap<i64, Vec<String>> {
    let mut kinds: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
    for e in all_events(store).await {
        if let Some(task) = e.task_id {
            kinds.entry(task).or_default().push(e.kind());
        }
    }
    kinds
}

/// Starts `taskyard serve` (the real binary) as a child process on `data`, with only the loops
/// in `loops` (no built-in ones), on a free loopback port, `env` added to its environment
/// (errors only are logged; a `TASKYARD_CONFIG` there is the config used); returns it and its
/// URL once it answers `/healthz`.
pub async fn serve_child(
    data: &Path,
    loops: &Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> (tokio::process::Child, String) {
    serve_child_limited(data, loops, env, None).await
}

/// [`serve_child`], its open-files limit (soft and hard) set to `nofile` when given.
pub async fn serve_child_limited(
    data: &Path,
    loops: &Path,
    env: &[(&str, &std::ffi::OsStr)],
    nofile: Option<u32>,
) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The caller's config (TASKYARD_CONFIG), if any, without the built-in loops. Read once at
    // startup: the file may go when the server is up.
    let mut settings: toml::Table = env
        .iter()
        .find(|(name, _)| *name == "TASKYARD_CONFIG")
        .map(|(_, file)| toml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap())
        .unwrap_or_default();
    settings
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap()
        .insert("builtin_loops".into(), toml::Value::Boolean(false));
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), toml::to_string(&settings).unwrap()).unwrap();
    let bin = env!("CARGO_BIN_EXE_taskyard");
    let mut command = match nofile {
        Some(n) => {
            let mut sh = tokio::process::Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(bin);
            sh
        }
        None => tokio::process::Command::new(bin),
    };
    let child = command
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(config.path())
        .arg("--data-dir")
        .arg(data)
        .arg("--loops-dir")
        .arg(loops)
        .env("TASKYARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "error")
        .envs(crate::backend::database_url(data).map(|url| ("TASKYARD_DATABASE_URL", url)))
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    let url = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{url}/healthz"), "the server").await;
    (child, url)
}

/// Waits (60 s at most) until a GET of `url` answers with success; `what` names it if not.
pub async fn wait_until_up(url: &str, what: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while !reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} never answered {url}"));
}

/// Reports a test that cannot run here (a program it needs is missing): prints SKIPPED and
/// returns true, except under `CI=true`, where nothing may be skipped and the test fails.
pub fn skipped(message: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}, and CI=true");
    }
    println!("SKIPPED: {message}");
    eprintln!("SKIPPED: {message}");
    true
}
