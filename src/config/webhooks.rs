//! `[[webhooks]]`: where events are POSTed, which ones, and how they are signed.

use serde::{Deserialize, Serialize};

use crate::domain::webhook::Hook;

use super::ConfigError;

/// How a webhook's body is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The event as JSON, as the event stream has it.
    #[default]
    Json,
    /// `{"text": "…"}`: one line, for Slack- and Discord-compatible incoming webhooks.
    Slack,
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name in deliveries (default `webhook-<n>`, counting from 1).
    #[serde(default)]
    pub name: Option<String>,
    /// Where to POST.
    pub url: String,
    /// Event kinds: exact (`task.completed`), a prefix (`task.*`), or `*`.
    pub events: Vec<String>,
    /// The environment variable holding the signing secret; without one, nothing is signed.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Only events of tasks in these projects (default: every event).
    #[serde(default)]
    pub projects: Option<Vec<String>>,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: WebhookFormat,
}

impl WebhookConfig {
    /// The webhook as the outbox needs it, for the `index`th entry.
    pub fn hook(&self, index: usize) -> Hook {
        Hook {
            name: self.name(index),
            url: self.url.clone(),
            events: self.events.clone(),
            secret_env: self.secret_env.clone(),
            projects: self.projects.clone(),
            slack: self.format == WebhookFormat::Slack,
        }
    }

    /// Its name: the configured one, or `webhook-<n>` for the `index`th entry.
    pub fn name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("webhook-{}", index + 1))
    }
}

/// Checks every entry: an http(s) URL, at least one well-formed event pattern, names unique.
pub fn validate(hooks: &[WebhookConfig]) -> Result<(), ConfigError> {
    let invalid = |field: String, message: String| ConfigError::Invalid { field, message };
    let mut names = std::collections::HashSet::new();
    for (i, hook) in hooks.iter().enumerate() {
        let at = |key: &str| format!("webhooks[{i}].{key}");
        if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
            return Err(invalid(
                at("url"),
                format!("{:?} is not an http(s) URL", hook.url),
            ));
        }
        if hook.events.is_empty() {
            return Err(invalid(at("events"), "names no event kind".into()));
        }
        for pattern in &hook.events {
            let well_formed = pattern == "*"
                || pattern
                    .strip_suffix(".*")
                    .unwrap_or(pattern)
                    .split('.')
                    .all(|part| {
                        !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    });
            if !well_formed {
                return Err(invalid(
                    at("events"),
                    format!("{pattern:?} is not an event kind, `prefix.*` or `*`"),
                ));
            }
        }
        if hook.secret_env.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(invalid(at("secret_env"), "names no variable".into()));
        }
        if !names.insert(hook.name(i)) {
            return Err(invalid(at("name"), format!("{:?} is used twice", hook.name(i))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::webhook::wants;

    #[test]
    fn patterns_match_kinds() {
        let p = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(wants(&p(&["task.completed"]), "task.completed"));
        assert!(!wants(&p(&["task.completed"]), "task.completed_late"));
        assert!(wants(&p(&["task.*"]), "task.failed"));
        assert!(!wants(&p(&["task.*"]), "taskx.failed"));
        assert!(!wants(&p(&["task.*"]), "run.started"));
        assert!(wants(&p(&["*"]), "loop.ran"));
    }

    #[test]
    fn entries_are_checked() {
        let hook = |url: &str, events: &[&str]| WebhookConfig {
            name: None,
            url: url.into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            secret_env: None,
            projects: None,
            format: WebhookFormat::Json,
        };
        assert!(validate(&[hook("https://x.test/h", &["task.*", "run.exited", "*"])]).is_ok());
        assert!(validate(&[hook("ftp://x", &["*"])]).is_err());
        assert!(validate(&[hook("http://x", &[])]).is_err());
        assert!(validate(&[hook("http://x", &["task.**"])]).is_err());
        assert!(validate(&[hook("http://x", &["Task"])]).is_err());
        let twice = [
            hook("http://x", &["*"]),
            WebhookConfig {
                name: Some("webhook-1".into()),
                ..hook("http://y", &["*"])
            },
        ];
        assert!(validate(&twice).is_err());
    }
}
