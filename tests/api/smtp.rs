//! A small SMTP server on loopback for tests: it speaks enough of RFC 5321 for a real client
//! to deliver mail over TCP, records every message, and can reject recipients for good.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent after DATA (dot-stuffing undone).
    pub data: String,
}

/// A running test SMTP server.
pub struct SmtpServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    task: JoinHandle<()>,
}

impl SmtpServer {
    /// Listens on a free loopback port; accepts everything.
    pub async fn start() -> SmtpServer {
        Self::start_on(0, None).await
    }

    /// Listens on `port` (0: any); with `reject`, answers every RCPT with that reply line.
    pub async fn start_on(port: u16, reject: Option<&'static str>) -> SmtpServer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("SMTP port is free");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let task = {
            let received = received.clone();
            let arrived = arrived.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let received = received.clone();
                    let arrived = arrived.clone();
                    tokio::spawn(async move {
                        let _ = session(socket, reject, received, arrived).await;
                    });
                }
            })
        };
        SmtpServer {
            port,
            received,
            arrived,
            task,
        }
    }

    /// Every message so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (at most a minute, as a guard against a hang) until `n` messages have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let notified = self.arrived.notified();
                let got = self.received();
                if got.len() >= n {
                    return got;
                }
                notified.await;
            }
        })
        .await
        .expect("the mail arrived")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free loopback port with nothing listening on it (for "the mail server is down").
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn session(
    socket: tokio::net::TcpStream,
    reject: Option<&'static str>,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 test.local ESMTP ready\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => "250-test.local\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".into(),
            "HELO" | "NOOP" => "250 OK\r\n".into(),
            "RSET" => {
                from.clear();
                to.clear();
                "250 OK\r\n".into()
            }
            "MAIL" => {
                from = command[10..].to_string();
                "250 OK\r\n".into()
            }
            "RCPT" => match reject {
                Some(answer) => format!("{answer}\r\n"),
                None => {
                    to.push(command[8..].to_string());
                    "250 OK\r\n".into()
                }
            },
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                received.lock().unwrap().push(Received {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                arrived.notify_waiters();
                "250 OK queued\r\n".into()
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => "502 command not implemented\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// A mail server that accepts connections and never says a word (a hung or very slow server).
pub struct SilentSmtp {
    pub port: u16,
    task: JoinHandle<()>,
}

impl SilentSmtp {
    pub async fn start() -> SilentSmtp {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        SilentSmtp { port, task }
    }
}

impl Drop for SilentSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
