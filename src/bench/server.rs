//! The server a benchmark runs against: a `taskyard serve` child process on a temporary data
//! folder (so its memory and CPU are its own), or a running server given by `--url`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::client::Client;

/// A server under test.
pub struct BenchServer {
    /// Its base URL.
    pub url: String,
    /// The base URLs of every node the agents use (this server's first).
    pub nodes: Vec<String>,
    /// An admin token for it.
    pub admin_token: String,
    child: Option<tokio::process::Child>,
    _dir: Option<tempfile::TempDir>,
    system: Option<System>,
}

impl BenchServer {
    /// Running servers: the nodes of one registry at `urls` (at least one; the first serves
    /// the admin's calls).
    pub fn existing(urls: &[String], token: &str) -> Self {
        let nodes: Vec<String> = urls.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        Self {
            url: nodes[0].clone(),
            nodes,
            admin_token: token.to_string(),
            child: None,
            _dir: None,
            system: None,
        }
    }

    /// Starts `taskyard serve` (this binary) on a free loopback port and a temporary data folder,
    /// with `config` as its config file and the registry in `database` when given (else the data
    /// folder's SQLite file); waits until it answers `/healthz`.
    pub async fn start(config: &str, durability: &str, database: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config_path = dir.path().join("taskyard.toml");
        std::fs::write(
            &config_path,
            // Only the assignment loop, so that no other loop's work lands in the measurements;
            // no per-token rate limit: at 10,000 cycles/s each of 64 agents makes ~310 changes/s.
            format!(
                "[server]\nbind = \"127.0.0.1:{port}\"\ndurability = \"{durability}\"\nbuiltin_loops = false\n\
                 rate_limit_per_second = 0\n{config}"
            ),
        )?;
        let loops = dir.path().join("loops");
        std::fs::create_dir_all(&loops)?;
        std::fs::write(
            loops.join("assignment.toml"),
            "kind = \"assignment\"\nschedule = \"every 1h\"\n",
        )?;
        let token = crate::token::new_token();
        let exe = std::env::current_exe().context("cannot find the taskyard binary")?;
        let child = tokio::process::Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--loops-dir")
            .arg(&loops)
            .env("TASKYARD_ADMIN_TOKEN", &token)
            .envs(database.map(|url| ("TASKYARD_DATABASE_URL", url)))
            // Its startup warnings are about the bench's own minimal config.
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the server")?;
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&url, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while client.get("/healthz").await.is_err() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the server did not come up within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            nodes: vec![url.clone()],
            url,
            admin_token: token,
            child: Some(child),
            _dir: Some(dir),
            system: System::new().ok(),
        })
    }

    /// An admin client.
    pub fn admin(&self) -> Client {
        Client::new(&self.url, Some(self.admin_token.clone()))
    }

    /// (resident bytes, CPU percent of one core since the last call) of a server this
    /// benchmark started.
    pub fn usage(&mut self) -> Option<(u64, f32)> {
        let pid = Pid::from_u32(self.child.as_ref()?.id()?);
        let system = self.system.as_mut()?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        system.process(pid).map(|p| (p.memory(), p.cpu_usage()))
    }

    /// CPU time (user and system, milliseconds) a server this benchmark started has used so far.
    pub fn cpu_ms(&mut self) -> Option<u64> {
        let pid = Pid::from_u32(self.child.as_ref()?.id()?);
        let system = self.system.as_mut()?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu(),
        );
        system.process(pid).map(|p| p.accumulated_cpu_time())
    }

    /// Stops a server this benchmark started.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }
}
