//! What a client without a token can do to the server's connections: a request head that never
//! completes is cut off after the header timeout, a kept-alive connection after the idle
//! timeout, and an attacker holding every connection the process can open does not stop
//! `/healthz` from answering.

use std::net::SocketAddr;
use std::time::Duration;

use taskyard::domain::time::Span;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{serve_child_limited, Server};

/// The start of a request whose head never ends: the slowloris attack.
const HALF_A_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// Waits (a minute at most, as a guard against a hang) until the server closes `stream`.
async fn closed_by_server(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server never closed {what}"));
}

/// Sends one whole request on `stream` and reads its whole answer; returns the status line.
async fn request(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the answer was cut off: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                return head.lines().next().unwrap().to_string();
            }
        }
    }
}

fn timeouts(header: u64, idle: u64) -> impl FnOnce(&mut taskyard::config::Config) {
    move |c| {
        c.server.header_timeout = Span(Duration::from_secs(header));
        c.server.idle_timeout = Span(Duration::from_secs(idle));
    }
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_off() {
    let server = Server::start_with(timeouts(1, 3_600)).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(HALF_A_HEAD).await.unwrap();
    closed_by_server(&mut slow, "half a request head").await;
    // Saying nothing at all is no better.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut silent, "a silent connection").await;
    // On a kept-alive connection, the next head has as long again from its first byte.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(request(&mut kept).await, "HTTP/1.1 200 OK");
    kept.write_all(HALF_A_HEAD).await.unwrap();
    closed_by_server(&mut kept, "the second half-sent head").await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start_with(timeouts(3_600, 1)).await;
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(request(&mut kept).await, "HTTP/1.1 200 OK");
    assert_eq!(request(&mut kept).await, "HTTP/1.1 200 OK", "kept alive");
    closed_by_server(&mut kept, "an idle kept-alive connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_an_attacker_holds_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let loops = dir.path().join("loops");
    std::fs::create_dir(&loops).unwrap();
    // A server that may open 128 files in all, attacked with many more half-sent requests.
    let (_server, url) = serve_child_limited(&dir.path().join("data"), &loops, &[], Some(128)).await;
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..400 {
        // A server that stopped accepting lets the kernel's queue fill up; the attacker moves on.
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        else {
            continue;
        };
        // A connection the server already closed refuses the write; the attacker goes on.
        let _ = stream.write_all(HALF_A_HEAD).await;
        held.push(stream);
    }
    let answer = tokio::time::timeout(Duration::from_secs(60), reqwest::get(format!("{url}/healthz")))
        .await
        .expect("/healthz answered while the attacker held every connection")
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
}
