//! `[server]`: where to listen and keep data, and the limits that keep one client (or one
//! attacker) from using up the server: connections, timeouts, open streams, sessions, logins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::time::Span;
use crate::store::Durability;

use super::{ConfigError, LogFormat, Secret};

/// The shortest admin token accepted from `TASKYARD_ADMIN_TOKEN`.
pub const MIN_ADMIN_TOKEN: usize = 32;

/// `[server]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Data folder: database, run logs, admin token.
    pub data_dir: PathBuf,
    /// This node's id among the servers sharing one database (1–64 letters, digits, `.`, `_`,
    /// `-`); default: the host's name and a random suffix, kept in the data folder.
    pub node_id: Option<String>,
    /// The registry's database: absent (or `sqlite://`) for the SQLite file in the data
    /// folder, `postgres://USER:PASSWORD@HOST:PORT/DATABASE` for PostgreSQL.
    pub database_url: Option<super::DatabaseUrl>,
    /// Loop definitions, one TOML file per loop; each adds a loop or replaces the built-in loop
    /// of its name.
    pub loops_dir: PathBuf,
    /// Run the built-in loops (each unless a file of its name in `loops_dir` replaces it);
    /// `false` runs only the loops of `loops_dir`.
    pub builtin_loops: bool,
    /// The URL people and agents reach this server at (for links); default `http://<bind>`.
    pub public_url: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Default lease length in seconds.
    pub lease_seconds: u64,
    /// Base of the exponential backoff after a retryable failure, in seconds.
    pub retry_backoff_seconds: u64,
    /// `normal` (survives a process crash) or `full` (fsync per commit; survives power loss).
    pub durability: Durability,
    /// Changes (non-GET requests) allowed per token per second; 0 turns the limit off.
    pub rate_limit_per_second: f64,
    /// How many changes one token may make in a burst.
    pub rate_limit_burst: u32,
    /// Open MCP sessions allowed at once, over all tokens.
    pub mcp_max_sessions: usize,
    /// Open MCP sessions allowed at once for one token's principal.
    pub mcp_max_sessions_per_agent: usize,
    /// Open connections at once (never more than the process's file limit allows).
    pub max_connections: usize,
    /// How long a client may take to send a request's head, from its connection (or, on a
    /// kept-alive connection, from the request's first byte).
    pub header_timeout: Span,
    /// How long a kept-alive connection may wait, idle, for its next request.
    pub idle_timeout: Span,
    /// Open streams (event streams, followed run logs, MCP message streams) over all tokens.
    pub max_streams: usize,
    /// Open streams for one token's principal.
    pub max_streams_per_token: usize,
    /// Waiting long polls (claim-next with `wait_seconds`) for one token's principal.
    pub max_long_polls_per_token: usize,
    /// Dashboard sessions one principal may have; a new login ends its oldest.
    pub max_sessions_per_principal: usize,
    /// Dashboard logins (`POST /login`, `/login?code=`) per client address and minute; 0 turns
    /// the limit off.
    pub login_per_minute: f64,
    /// Logins one client address may make in a burst.
    pub login_burst: u32,
    /// Failed authentications forgiven per client address and second; 0 turns the throttle off.
    pub auth_failures_per_second: f64,
    /// Failed authentications one client address may make in a burst before it is refused.
    pub auth_failures_burst: u32,
    /// A token that may read `/metrics` and nothing else (any viewer token may too).
    pub metrics_token: Option<Secret>,
    /// The admin token; only from `TASKYARD_ADMIN_TOKEN`, never from the file.
    #[serde(skip)]
    pub admin_token: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7311)),
            data_dir: PathBuf::from(".taskyard"),
            node_id: None,
            database_url: None,
            loops_dir: PathBuf::from("loops"),
            builtin_loops: true,
            public_url: None,
            log_format: LogFormat::Human,
            max_body_bytes: 1024 * 1024,
            lease_seconds: 300,
            retry_backoff_seconds: 30,
            durability: Durability::Normal,
            rate_limit_per_second: 200.0,
            rate_limit_burst: 400,
            mcp_max_sessions: 1000,
            mcp_max_sessions_per_agent: 32,
            max_connections: 10_000,
            header_timeout: Span(Duration::from_secs(10)),
            idle_timeout: Span(Duration::from_secs(60)),
            max_streams: 1_000,
            max_streams_per_token: 32,
            max_long_polls_per_token: 64,
            max_sessions_per_principal: 16,
            login_per_minute: 10.0,
            login_burst: 20,
            auth_failures_per_second: 2.0,
            auth_failures_burst: 20,
            metrics_token: None,
            admin_token: None,
        }
    }
}

/// Refuses `value` outside `range`, naming `server.<field>`.
fn within<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        field: format!("server.{field}"),
        message: format!("must be between {} and {}", range.start(), range.end()),
    })
}

/// Refuses a rate that is not a number of 0 or more.
fn rate(field: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        field: format!("server.{field}"),
        message: "must be a number, 0 or more".into(),
    })
}

impl ServerConfig {
    /// Checks ranges and formats the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        within("lease_seconds", self.lease_seconds, 1..=86_400)?;
        within("max_body_bytes", self.max_body_bytes, 1024..=64 * 1024 * 1024)?;
        rate("rate_limit_per_second", self.rate_limit_per_second)?;
        within("retry_backoff_seconds", self.retry_backoff_seconds, 0..=3_600)?;
        within("mcp_max_sessions", self.mcp_max_sessions, 1..=100_000)?;
        within(
            "mcp_max_sessions_per_agent",
            self.mcp_max_sessions_per_agent,
            1..=self.mcp_max_sessions,
        )?;
        within("max_connections", self.max_connections, 16..=1_000_000)?;
        within("header_timeout", self.header_timeout.0.as_secs(), 1..=3_600)?;
        within("idle_timeout", self.idle_timeout.0.as_secs(), 1..=86_400)?;
        within("max_streams", self.max_streams, 1..=1_000_000)?;
        within(
            "max_streams_per_token",
            self.max_streams_per_token,
            1..=self.max_streams,
        )?;
        within(
            "max_long_polls_per_token",
            self.max_long_polls_per_token,
            1..=1_000_000,
        )?;
        within(
            "max_sessions_per_principal",
            self.max_sessions_per_principal,
            1..=1_000,
        )?;
        rate("login_per_minute", self.login_per_minute)?;
        within("login_burst", self.login_burst, 1..=100_000)?;
        rate("auth_failures_per_second", self.auth_failures_per_second)?;
        within("auth_failures_burst", self.auth_failures_burst, 1..=100_000)?;
        if let Some(url) = &self.database_url {
            url.check()?;
        }
        if let Some(id) = &self.node_id {
            crate::cluster::check_node_id(id).map_err(|message| ConfigError::Invalid {
                field: "server.node_id".into(),
                message,
            })?;
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    field: "server.public_url".into(),
                    message: format!("{url:?} is not an http(s) URL"),
                });
            }
        }
        if let Some(token) = &self.admin_token {
            if token.expose().chars().count() < MIN_ADMIN_TOKEN {
                return Err(ConfigError::Invalid {
                    field: "TASKYARD_ADMIN_TOKEN".into(),
                    message: format!(
                        "is {} characters long; an admin token must have at least {MIN_ADMIN_TOKEN} \
                         (a short one can be guessed): use a long random value, e.g. \
                         `openssl rand -hex 32`, or unset it to have one generated into \
                         <data-dir>/admin.token",
                        token.expose().chars().count()
                    ),
                });
            }
        }
        Ok(())
    }
}
