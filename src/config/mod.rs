//! Configuration: defaults < config file < environment < flags. Secrets are redacted whenever
//! the config is printed or logged.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::domain::input::word;
use crate::domain::time::Span;
use crate::domain::Priority;

mod database;
mod isolation;
mod notify;
mod server;
mod warnings;
pub mod webhooks;

pub use database::{backend_of, Backend, DatabaseUrl};
pub use isolation::{Isolation, DEFAULT_BRANCH};
pub use notify::{HumanConfig, NotifyConfig, SmtpConfig, SmtpTls, Transport};
pub use server::ServerConfig;
pub use webhooks::{WebhookConfig, WebhookFormat};

/// The name of the config file looked for in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "taskyard.toml";
/// The admin token's file inside the data folder.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The embedded database's file inside the data folder.
pub const DATABASE_FILE: &str = "taskyard.db";

/// A secret value: never shown by `Debug` or `config show`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Shown redacted when the effective config is printed.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The whole effective configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: where to listen and keep data, and request limits.
    pub server: ServerConfig,
    /// `[routing]`: which work belongs to people and which is spawned, to which agent type.
    pub routing: RoutingConfig,
    /// `[spawner]`: limits on spawned agent processes.
    pub spawner: SpawnerConfig,
    /// `[agent_types.NAME]`: how to start each agent type.
    pub agent_types: BTreeMap<String, AgentTypeConfig>,
    /// `[notify]`: email to people about work that needs them.
    pub notify: NotifyConfig,
    /// `[[humans]]`: the people who take work by email.
    pub humans: Vec<HumanConfig>,
    /// `[[webhooks]]`: where events are POSTed.
    pub webhooks: Vec<WebhookConfig>,
}

/// `[routing]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Task kinds that go to people; claim-next never hands them to agents.
    pub human_kinds: Vec<String>,
    /// Priorities whose tasks are spawned (route `auto`).
    pub spawn_priorities: Vec<Priority>,
    /// Capability → agent type; the first of a task's capabilities found here picks the type.
    pub agent_types: BTreeMap<String, String>,
    /// The agent type when no capability matches.
    pub default_agent_type: String,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        let map = [
            ("architecture", "decision-architect"),
            ("backend", "backend-specialist"),
            ("frontend", "ui-specialist-pro"),
            ("ui", "ui-specialist-pro"),
            ("testing", "quality-lead"),
            ("integration", "development-lead"),
            ("deployment", "operations-lead"),
        ];
        Self {
            human_kinds: vec!["architecture".into(), "strategic".into()],
            spawn_priorities: vec![Priority::P0, Priority::P1],
            agent_types: map.iter().map(|(c, t)| (c.to_string(), t.to_string())).collect(),
            default_agent_type: "development-lead".into(),
        }
    }
}

/// What happens, at boot, to a spawned process that outlived the previous server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRestart {
    /// Stop its process group and hand the task back (default).
    #[default]
    Terminate,
    /// Keep its lease alive while it lives (its output after the restart is not captured).
    Adopt,
}

/// `[spawner]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpawnerConfig {
    /// Most spawned processes at once, over all types.
    pub max_concurrent: usize,
    /// What to do with processes found alive at boot.
    pub on_restart: OnRestart,
    /// Deepest subtask level that is still spawned (a top-level task is level 0).
    pub max_depth: i64,
    /// Most subtasks one task may have.
    pub max_fanout: i64,
    /// Largest run log; output beyond it is dropped.
    pub log_max_bytes: u64,
    /// Time between TERM and KILL when a run is stopped.
    pub kill_grace: Span,
}

impl Default for SpawnerConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 4,
            on_restart: OnRestart::Terminate,
            max_depth: 3,
            max_fanout: 50,
            log_max_bytes: 10 * 1024 * 1024,
            kill_grace: Span(std::time::Duration::from_secs(10)),
        }
    }
}

/// `[agent_types.NAME]`: one kind of agent process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentTypeConfig {
    /// Program and arguments; `{task.id}`, `{task.title}`, `{prompt}`, … expand inside each.
    pub command: Vec<String>,
    /// Extra environment (runs start with a clean one: see `spawn/environment.rs`).
    pub env: BTreeMap<String, String>,
    /// Variables of the server's environment passed on to runs as they are (an API key for
    /// the agent program, say); nothing else of it is, beyond a short allow-list.
    pub env_passthrough: Vec<String>,
    /// Working directory.
    pub workdir: Option<PathBuf>,
    /// Longest run (default 1h).
    pub timeout: Option<Span>,
    /// Most runs of this type at once.
    pub max_concurrent: Option<usize>,
    /// Prompt template (default: the built-in one).
    pub prompt: Option<String>,
    /// Where runs work: `none` (default) or `worktree` (a git worktree each, from `repo`).
    pub isolation: Isolation,
    /// The git repository runs' worktrees are made from (required with `isolation = "worktree"`).
    pub repo: Option<PathBuf>,
    /// The commit (branch, tag, sha) a run's branch starts from; default: the repository's
    /// HEAD when the run starts.
    pub base: Option<String>,
    /// The branch made for each run, a template with the prompt's placeholders (default
    /// [`DEFAULT_BRANCH`]).
    pub branch: Option<String>,
}

/// Checks one `env_passthrough` name: a variable name, and never the admin token's.
pub fn check_passthrough(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(format!("{name:?} is not an environment variable's name"));
    }
    if name == "TASKYARD_ADMIN_TOKEN" {
        return Err("the server's admin token is never passed to programs".into());
    }
    Ok(())
}

/// Values from flags and environment variables (clap merges the two), applied over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `TASKYARD_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--bind` / `TASKYARD_BIND`.
    pub bind: Option<SocketAddr>,
    /// `--data-dir` / `TASKYARD_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--loops-dir` / `TASKYARD_LOOPS_DIR`.
    pub loops_dir: Option<PathBuf>,
    /// `--database` / `TASKYARD_DATABASE_URL`.
    pub database_url: Option<String>,
    /// `--log-format` / `TASKYARD_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `TASKYARD_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
}

/// A config that could not be loaded, with the file and the field where known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong field.
    #[error("invalid config file {path}:\n{message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field and line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: {field}: {message}")]
    Invalid {
        /// The field, e.g. `server.lease_seconds`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads the effective config: defaults, then the config file (the given one, or
    /// `./taskyard.toml` when present), then the overrides. Returns it and the file used.
    pub fn load(overrides: &Overrides) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let path = match &overrides.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let mut config = match &path {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        if let Some(bind) = overrides.bind {
            config.server.bind = bind;
        }
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir = dir.clone();
        }
        if let Some(dir) = &overrides.loops_dir {
            config.server.loops_dir = dir.clone();
        }
        if let Some(url) = overrides.database_url.as_deref().filter(|u| !u.is_empty()) {
            config.server.database_url = Some(DatabaseUrl::parse(url)?);
        }
        if let Some(format) = overrides.log_format {
            config.server.log_format = format;
        }
        if let Some(token) = overrides.admin_token.as_deref().filter(|t| !t.is_empty()) {
            config.server.admin_token = Some(Secret::new(token));
        }
        config.validate()?;
        Ok((config, path))
    }

    /// Parses one config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // The parser's own rendering: the line and column, then the snippet on lines of their own.
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Checks ranges and formats the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: field.to_string(),
            message,
        };
        self.server.validate()?;
        webhooks::validate(&self.webhooks)?;
        if self.spawner.max_concurrent == 0 {
            return Err(invalid("spawner.max_concurrent", "must be at least 1".into()));
        }
        for (name, t) in &self.agent_types {
            if t.command.first().is_some_and(|p| p.trim().is_empty()) {
                return Err(invalid(
                    &format!("agent_types.{name}.command"),
                    "names no program".into(),
                ));
            }
            for (i, var) in t.env_passthrough.iter().enumerate() {
                check_passthrough(var)
                    .map_err(|m| invalid(&format!("agent_types.{name}.env_passthrough[{i}]"), m))?;
            }
            t.validate_isolation(name)?;
            if t.max_concurrent == Some(0) {
                return Err(invalid(
                    &format!("agent_types.{name}.max_concurrent"),
                    "must be at least 1".into(),
                ));
            }
        }
        for (i, kind) in self.routing.human_kinds.iter().enumerate() {
            word(&format!("routing.human_kinds[{i}]"), kind).map_err(|e| invalid(&e.field, e.message))?;
        }
        self.validate_notify()
    }

    /// Checks `[notify]` and `[[humans]]`: addresses parse, names are usable agent names.
    fn validate_notify(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { field, message };
        let address = |field: String, value: &str| {
            value
                .parse::<lettre::message::Mailbox>()
                .map(|_| ())
                .map_err(|e| invalid(field, format!("{value:?} is not an email address: {e}")))
        };
        let n = &self.notify;
        address("notify.from".into(), &n.from)?;
        for (i, to) in n.default_to.iter().enumerate() {
            address(format!("notify.default_to[{i}]"), to)?;
        }
        if n.transport == Transport::Smtp && n.smtp.host.trim().is_empty() {
            return Err(invalid("notify.smtp.host".into(), "names no host".into()));
        }
        let lease = n.human_lease.0.as_secs();
        if !(1..=86_400).contains(&lease) {
            return Err(invalid(
                "notify.human_lease".into(),
                "must be between 1s and 1d".into(),
            ));
        }
        if n.link_ttl.0 < std::time::Duration::from_secs(60) {
            return Err(invalid("notify.link_ttl".into(), "must be at least 1m".into()));
        }
        if n.max_attempts == 0 {
            return Err(invalid("notify.max_attempts".into(), "must be at least 1".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, h) in self.humans.iter().enumerate() {
            let field = |f: &str| format!("humans[{i}].{f}");
            crate::domain::input::agent_name(&h.name).map_err(|m| invalid(field("name"), m))?;
            if !names.insert(h.name.as_str()) {
                return Err(invalid(field("name"), format!("{:?} is listed twice", h.name)));
            }
            address(field("email"), &h.email)?;
            for (j, c) in h.capabilities.iter().enumerate() {
                word(&field(&format!("capabilities[{j}]")), c).map_err(|e| invalid(e.field, e.message))?;
            }
        }
        Ok(())
    }

    /// The URL links and spawned agents use.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{bound}"),
        }
    }

    /// The effective config as TOML, with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut text = toml::to_string_pretty(self).unwrap_or_default();
        if self.server.admin_token.is_some() {
            text.push_str("\n# admin token: set by TASKYARD_ADMIN_TOKEN (<redacted>)\n");
        } else {
            text.push_str(&format!(
                "\n# admin token: read from {}\n",
                self.server.data_dir.join(ADMIN_TOKEN_FILE).display()
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[server]\nbind = \"127.0.0.1:9000\"\nlease_seconds = 60\n").unwrap();
        let overrides = Overrides {
            config: Some(file.clone()),
            bind: Some("127.0.0.1:9001".parse().unwrap()),
            ..Default::default()
        };
        let (config, used) = Config::load(&overrides).unwrap();
        assert_eq!(used, Some(file));
        assert_eq!(config.server.bind.port(), 9001, "flag beats file");
        assert_eq!(config.server.lease_seconds, 60, "file beats default");
        assert_eq!(config.server.max_body_bytes, 1024 * 1024, "default stays");
    }

    #[test]
    fn errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[server]\nlease_secs = 60\n").unwrap();
        let err = Config::from_file(&file).unwrap_err().to_string();
        assert!(err.contains("lease_secs") && err.contains("t.toml"), "{err}");
        std::fs::write(&file, "[server]\nlease_seconds = 0\n").unwrap();
        let err = Config::load(&Overrides {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.lease_seconds"), "{err}");
    }

    /// Validates a config file's text.
    fn check(text: &str) -> Result<(), String> {
        let config: Config = toml::from_str(text).unwrap();
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn mcp_session_limits_are_checked() {
        assert!(check("[server]\nmcp_max_sessions = 10\nmcp_max_sessions_per_agent = 10\n").is_ok());
        let err = check("[server]\nmcp_max_sessions = 0\n").unwrap_err();
        assert!(err.contains("server.mcp_max_sessions"), "{err}");
        let err = check("[server]\nmcp_max_sessions = 10\nmcp_max_sessions_per_agent = 11\n").unwrap_err();
        assert!(err.contains("server.mcp_max_sessions_per_agent"), "{err}");
    }

    #[test]
    fn notify_errors_name_the_field() {
        assert!(check("[notify]\nfrom = \"T <t@example.com>\"\n").is_ok());
        let err = check("[notify]\nfrom = \"not an address\"\n").unwrap_err();
        assert!(err.contains("notify.from"), "{err}");
        let err = check("[notify]\ndefault_to = [\"a@example.com\", \"nope\"]\n").unwrap_err();
        assert!(err.contains("notify.default_to[1]"), "{err}");
        let err = check("[notify]\nhuman_lease = \"2d\"\n").unwrap_err();
        assert!(err.contains("notify.human_lease"), "{err}");
        let two = "[[humans]]\nname = \"ana\"\nemail = \"a@example.com\"\n";
        let err = check(&format!("{two}{two}")).unwrap_err();
        assert!(err.contains("humans[1].name"), "{err}");
        let err = check("[[humans]]\nname = \"admin\"\nemail = \"a@example.com\"\n").unwrap_err();
        assert!(err.contains("humans[0].name"), "{err}");
        let err = check("[[humans]]\nname = \"ana\"\nemail = \"ana\"\n").unwrap_err();
        assert!(err.contains("humans[0].email"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config.server.admin_token = Some(Secret::new("super-secret-token-value"));
        assert!(!format!("{config:?}").contains("super-secret"));
        assert!(!config.to_redacted_toml().contains("super-secret"));

        // The metrics token comes from the file, and goes back out redacted.
        let config: Config = toml::from_str("[server]\nmetrics_token = \"scrape-secret-value\"\n").unwrap();
        assert_eq!(
            config.server.metrics_token.as_ref().map(Secret::expose),
            Some("scrape-secret-value")
        );
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("scrape-secret"), "{shown}");
        assert!(shown.contains("metrics_token = \"<redacted>\""), "{shown}");
    }

    #[test]
    fn passthrough_names_are_checked() {
        assert!(check_passthrough("ANTHROPIC_API_KEY").is_ok());
        assert!(check_passthrough("").is_err());
        assert!(check_passthrough("A=B").is_err());
        assert!(check_passthrough("TASKYARD_ADMIN_TOKEN").is_err());
    }
}
