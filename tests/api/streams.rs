//! What one token may hold open: event streams and waiting long polls are capped per token and
//! in all, refusals name the limit, places come back when streams close, and so does the memory
//! streams took.

use std::ffi::OsStr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::notify::eventually;
use crate::support::{serve_child, Server, ADMIN_TOKEN};

/// Opens the event stream as `token`: the open response, or the refusal's status and problem.
async fn open_events(
    server: &Server,
    token: &str,
) -> Result<reqwest::Response, (StatusCode, Option<String>, Value)> {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/events", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if resp.status() == StatusCode::OK {
        return Ok(resp);
    }
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    Err((status, retry, resp.json().await.unwrap()))
}

fn refused_naming(refusal: (StatusCode, Option<String>, Value), setting: &str) {
    let (status, retry_after, problem) = refusal;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["code"], "rate_limited");
    assert!(problem["detail"].as_str().unwrap().contains(setting), "{problem}");
    assert!(retry_after.is_some(), "a refusal says when to try again");
}

#[tokio::test]
async fn streams_are_capped_per_token_and_in_all_and_come_back_when_closed() {
    let server = Server::start_with(|c| {
        c.server.max_streams = 5;
        c.server.max_streams_per_token = 3;
    })
    .await;
    let viewer = server.agent_with_role("watcher", &[], "viewer").await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(open_events(&server, &viewer).await.expect("within the limit"));
    }
    refused_naming(
        open_events(&server, &viewer)
            .await
            .expect_err("a fourth stream is refused"),
        "server.max_streams_per_token = 3",
    );
    let other = server.agent_with_role("other", &[], "viewer").await;
    let theirs = [
        open_events(&server, &other).await.unwrap(),
        open_events(&server, &other).await.unwrap(),
    ];
    refused_naming(
        open_events(&server, &server.admin)
            .await
            .expect_err("the server is full"),
        "server.max_streams = 5",
    );
    // A stream that ends gives its place back.
    drop(mine.pop());
    let again = eventually(|| async { open_events(&server, &viewer).await.ok() }).await;
    drop((again, mine, theirs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_capped_per_token() {
    let server = Server::start_with(|c| c.server.max_long_polls_per_token = 2).await;
    let agent = server.agent("poller", &[]).await;
    let poll = |token: String| {
        let url = format!("{}/api/v1/claims/next", server.url);
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"wait_seconds": 30}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let waiting = [poll(agent.clone()), poll(agent.clone())];
    eventually(|| async { (server.app_store.bus().work_waiters() == 2).then_some(()) }).await;
    let (status, problem) = server
        .post(&agent, "/claims/next", json!({"wait_seconds": 30}))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("server.max_long_polls_per_token = 2"),
        "{problem}"
    );
    // Asking without waiting is no long poll.
    let (status, _) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let other = server.agent("other-poller", &[]).await;
    let theirs = poll(other);
    eventually(|| async { (server.app_store.bus().work_waiters() == 3).then_some(()) }).await;
    for w in waiting {
        w.abort();
    }
    theirs.abort();
}

/// The server process's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Opens an event stream over a plain socket and waits for its response head.
async fn raw_stream(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream opened");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

const STREAMS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_taken_by_streams_is_given_back_when_they_close() {
    let dir = tempfile::tempdir().unwrap();
    let loops = dir.path().join("loops");
    std::fs::create_dir(&loops).unwrap();
    let config = dir.path().join("taskyard.toml");
    std::fs::write(
        &config,
        format!("[server]\nmax_streams = {STREAMS}\nmax_streams_per_token = {STREAMS}\n"),
    )
    .unwrap();
    let (server, url) = serve_child(
        &dir.path().join("data"),
        &loops,
        &[("TASKYARD_CONFIG", OsStr::new(&config))],
    )
    .await;
    let pid = server.id().unwrap();
    let addr = url.trim_start_matches("http://").to_string();
    // Warm up: one stream opened and closed, so what stays is not first-use setup.
    drop(raw_stream(&addr).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(pid);
    let mut open = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        open.push(raw_stream(&addr).await);
    }
    let with = rss(pid);
    drop(open);
    let taken = with.saturating_sub(before);
    eprintln!(
        "RSS before {} KiB, with {STREAMS} streams {} KiB ({} KiB per stream)",
        before / 1024,
        with / 1024,
        taken / 1024 / STREAMS as u64
    );
    assert!(taken > 0);
    let after = eventually(|| async {
        let now = rss(pid);
        (now.saturating_sub(before) < taken / 4).then_some(now)
    })
    .await;
    eprintln!("RSS after closing them {} KiB", after / 1024);
}
