//! Wall-clock steps: the server runs under libfaketime, whose offset the test changes while the
//! server runs (and between runs). A step forward must not expire a lease, a step back must not
//! extend one, and a server restarted after the clock was set back must not keep a lease longer
//! than its own length.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{serve_child, ADMIN_TOKEN};

/// Where Debian's `faketime` package puts the preload library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A `taskyard serve` child whose wall clock is offset by what `offset_file` says (re-read on
/// every call), while its monotonic and boot clocks stay true.
struct Faked {
    child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Faked {
    async fn start(data: &Path, loops: &Path, offset_file: &Path) -> Faked {
        let (child, url) = serve_child(
            data,
            loops,
            &[
                ("LD_PRELOAD", LIBFAKETIME.as_ref()),
                ("FAKETIME_TIMESTAMP_FILE", offset_file.as_os_str()),
                ("FAKETIME_NO_CACHE", "1".as_ref()),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1".as_ref()),
            ],
        )
        .await;
        Faked {
            child,
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(token, reqwest::Method::POST, path, Some(body)).await
    }

    async fn status(&self, id: i64) -> String {
        let (status, task) = self
            .call(ADMIN_TOKEN, reqwest::Method::GET, &format!("/tasks/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{task}");
        task["status"].as_str().unwrap().to_string()
    }

    /// Runs the lease reaper once, now (retrying while a scheduled run is under way).
    async fn reap(&self) {
        loop {
            let (status, body) = self.post(ADMIN_TOKEN, "/loops/lease-reaper/run", json!({})).await;
            match status {
                StatusCode::OK => return,
                StatusCode::CONFLICT => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("run-now answered {other}: {body}"),
            }
        }
    }

    /// Runs the reaper until task `id` is available again; the lease must run out on its own
    /// length (a lease extended by the clock step would hold for hours).
    async fn expect_released(&self, id: i64, why: &str) {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                self.reap().await;
                if self.status(id).await == "available" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{why}: the lease never ran out"));
    }

    async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "the server stops cleanly: {status}");
    }
}

fn set_offset(file: &Path, offset: &str) {
    let partial = file.with_extension("partial");
    std::fs::write(&partial, format!("{offset}\n")).unwrap();
    std::fs::rename(&partial, file).unwrap();
}

/// A loops folder with only the lease reaper, on a schedule slow enough that the test drives it.
fn reaper_only(dir: &Path) -> PathBuf {
    let loops = dir.join("loops");
    std::fs::create_dir_all(&loops).unwrap();
    std::fs::write(
        loops.join("lease-reaper.toml"),
        "kind = \"lease-reaper\"\nschedule = \"every 1h\"\nenabled = true\n",
    )
    .unwrap();
    loops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_steps_neither_expire_nor_extend_leases() {
    if !Path::new(LIBFAKETIME).exists() {
        let message = format!("{LIBFAKETIME} is missing (Debian package faketime)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}, and CI=true");
        }
        println!("SKIPPED: {message}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let loops = reaper_only(dir.path());
    let offset = dir.path().join("faketime");
    set_offset(&offset, "+0");
    let server = Faked::start(&data, &loops, &offset).await;

    let (status, body) = server
        .post(ADMIN_TOKEN, "/agents", json!({"name": "worker"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let agent = body["token"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for title in ["long", "short", "across restart"] {
        let (status, task) = server.post(ADMIN_TOKEN, "/tasks", json!({"title": title})).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        ids.push(task["id"].as_i64().unwrap());
    }
    let claim = |id: i64, seconds: u64| {
        let server = &server;
        let agent = &agent;
        async move {
            let (status, body) = server
                .post(
                    agent,
                    &format!("/tasks/{id}/claim"),
                    json!({"lease_seconds": seconds}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["lease"]["fence"].clone()
        }
    };

    // Forward two hours: a ten-minute lease taken a moment ago is still held.
    let fence = claim(ids[0], 600).await;
    set_offset(&offset, "+2h");
    server.reap().await;
    assert_eq!(
        server.status(ids[0]).await,
        "in_progress",
        "a step forward expired a lease"
    );
    let (status, body) = server
        .post(
            &agent,
            &format!("/tasks/{}/progress", ids[0]),
            json!({"fence": fence, "percent": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the holder keeps its lease: {body}");

    // Back two hours: a two-second lease taken before the step still ends after two seconds.
    claim(ids[1], 2).await;
    set_offset(&offset, "+0");
    server.expect_released(ids[1], "a step back").await;

    // Set back while stopped: at restart no lease ends later than its length from now.
    claim(ids[2], 2).await;
    server.stop().await;
    set_offset(&offset, "-2h");
    let server = Faked::start(&data, &loops, &offset).await;
    server
        .expect_released(ids[2], "a restart after a step back")
        .await;
    assert_eq!(server.status(ids[0]).await, "in_progress");
    server.stop().await;
}
