//! Who hears about a task: the `[[humans]]` whose capabilities or projects match it, in config
//! order, else the `notify.default_to` addresses. A task is offered to one person at a time.

use crate::config::Config;
use crate::domain::Task;

/// A person who can be told about work and take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Their agent name (kind `human`).
    pub name: String,
    /// Where their email goes.
    pub email: String,
    /// Capabilities they cover.
    pub capabilities: Vec<String>,
}

/// Everyone who may be told anything: the configured humans, then the `default_to` addresses
/// that are not already someone's.
pub fn everyone(config: &Config) -> Vec<Person> {
    let mut out: Vec<Person> = config
        .humans
        .iter()
        .map(|h| Person {
            name: h.name.clone(),
            email: h.email.clone(),
            capabilities: h.capabilities.clone(),
        })
        .collect();
    for to in &config.notify.default_to {
        let address = bare_address(to);
        if !out.iter().any(|p| bare_address(&p.email) == address) {
            out.push(Person {
                name: name_for_address(&address),
                email: to.clone(),
                capabilities: Vec::new(),
            });
        }
    }
    out
}

/// The people task `task` goes to, best first: matching humans, else the default addresses.
pub fn candidates(task: &Task, config: &Config) -> Vec<Person> {
    let matching: Vec<Person> = config
        .humans
        .iter()
        .filter(|h| {
            h.projects.contains(&task.project) || task.capabilities.iter().any(|c| h.capabilities.contains(c))
        })
        .map(|h| Person {
            name: h.name.clone(),
            email: h.email.clone(),
            capabilities: h.capabilities.clone(),
        })
        .collect();
    if !matching.is_empty() {
        return matching;
    }
    let humans = config.humans.len();
    everyone(config).split_off(humans)
}

/// The first candidate who has not declined the task.
pub fn next_person(task: &Task, config: &Config, declined: &[String]) -> Option<Person> {
    candidates(task, config)
        .into_iter()
        .find(|p| !declined.contains(&p.name))
}

/// `a@b.c` from `Name <a@b.c>` (or the text itself).
fn bare_address(text: &str) -> String {
    text.parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| text.trim().to_string())
        .to_lowercase()
}

/// An agent name for a bare address: characters agent names do not allow become `_`.
fn name_for_address(address: &str) -> String {
    address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanConfig;

    fn human(name: &str, caps: &[&str], projects: &[&str]) -> HumanConfig {
        HumanConfig {
            name: name.into(),
            email: format!("{name}@example.com"),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            projects: projects.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn task(project: &str, caps: &[&str]) -> Task {
        Task {
            project: project.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..crate::spawn::router::tests_support::sample_task()
        }
    }

    #[test]
    fn matching_people_in_config_order_else_the_default_addresses() {
        let mut config = Config {
            humans: vec![
                human("ana", &["architecture"], &[]),
                human("bo", &[], &["web"]),
                human("cy", &["architecture", "backend"], &[]),
            ],
            ..Config::default()
        };
        config.notify.default_to = vec!["Lead <lead+ops@example.com>".into(), "bo@example.com".into()];
        let names = |t: &Task| {
            candidates(t, &config)
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&task("api", &["architecture"])), ["ana", "cy"]);
        assert_eq!(names(&task("web", &["backend"])), ["bo", "cy"]);
        // Nobody matches: the default addresses that are not already a person's.
        assert_eq!(names(&task("api", &["docs"])), ["lead_ops@example.com"]);
        let next = next_person(&task("api", &["architecture"]), &config, &["ana".into()]);
        assert_eq!(next.map(|p| p.name).as_deref(), Some("cy"));
        assert!(next_person(
            &task("api", &["architecture"]),
            &config,
            &["ana".into(), "cy".into()]
        )
        .is_none());
    }
}
