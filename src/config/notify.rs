//! `[notify]`, `[notify.smtp]` and `[[humans]]`: who hears about work that needs a person, and
//! how the email leaves.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::time::Span;

/// How notifications leave the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Write each email as an `.eml` file into `notify.file_dir` (default): no mail server needed.
    #[default]
    File,
    /// Send through the SMTP server in `[notify.smtp]`.
    Smtp,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (a relay on the same host or a test server only).
    None,
    /// Plain connection upgraded with STARTTLS, which is required (default; port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[notify]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// The sender, e.g. `taskyard <taskyard@example.com>`.
    pub from: String,
    /// Addresses told about work that no `[[humans]]` entry matches.
    pub default_to: Vec<String>,
    /// `file` (default) or `smtp`.
    pub transport: Transport,
    /// Where the `file` transport writes `.eml` files (default `<data-dir>/mail`).
    pub file_dir: Option<PathBuf>,
    /// The SMTP server, for `transport = "smtp"`.
    pub smtp: SmtpConfig,
    /// How long the take and decline links in an email stay valid.
    pub link_ttl: Span,
    /// Lease a person gets when taking a task from an email (at most 1d; renew with progress).
    pub human_lease: Span,
    /// Tell a person when an in-progress task stalls.
    pub on_stall: bool,
    /// Sending attempts before a notification is marked failed.
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts (doubling, capped at one hour).
    pub retry_backoff: Span,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            from: "taskyard <taskyard@localhost>".into(),
            default_to: Vec::new(),
            transport: Transport::File,
            file_dir: None,
            smtp: SmtpConfig::default(),
            link_ttl: Span(Duration::from_secs(7 * 86_400)),
            human_lease: Span(Duration::from_secs(86_400)),
            on_stall: true,
            max_attempts: 10,
            retry_backoff: Span(Duration::from_secs(30)),
        }
    }
}

/// `[notify.smtp]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Port (default 587 for `starttls`, 465 for `tls`, 25 for `none`).
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    pub tls: SmtpTls,
    /// User name for authentication (none when absent).
    pub username: Option<String>,
    /// The environment variable holding the password (default `TASKYARD_SMTP_PASSWORD`).
    pub password_env: String,
    /// Longest wait for the server on one attempt.
    pub timeout: Span,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: None,
            tls: SmtpTls::Starttls,
            username: None,
            password_env: "TASKYARD_SMTP_PASSWORD".into(),
            timeout: Span(Duration::from_secs(30)),
        }
    }
}

impl SmtpConfig {
    /// The port in use: the configured one or the usual one for the TLS mode.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }
}

/// `[[humans]]`: a person who takes work by email.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HumanConfig {
    /// Their name; they act as the agent of kind `human` with this name.
    pub name: String,
    /// Their email address.
    pub email: String,
    /// Capabilities they cover: a task needing any of them comes to them.
    pub capabilities: Vec<String>,
    /// Projects they look after: any task of these comes to them.
    pub projects: Vec<String>,
}
