//! `isolation`, `repo`, `base` and `branch` of an agent type: whether each run works in a git
//! worktree of its own, made from which repository and commit, on which branch. The worktrees
//! themselves are made and removed by `spawn::worktree`.

use serde::{Deserialize, Serialize};

use super::{AgentTypeConfig, ConfigError};

/// Where an agent type's runs work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In the type's `workdir` (or the server's), shared by all its runs (default).
    #[default]
    None,
    /// Each run in a git worktree of its own, on a branch of its own, made from `repo`.
    Worktree,
}

/// The branch a run in a worktree works on, unless the agent type names another.
pub const DEFAULT_BRANCH: &str = "taskyard/{task.id}-{run.id}";

impl AgentTypeConfig {
    /// The branch template runs in a worktree use.
    pub fn branch_template(&self) -> &str {
        self.branch.as_deref().unwrap_or(DEFAULT_BRANCH)
    }

    /// Checks the worktree settings; errors name the field (under `agent_types.NAME`).
    pub(super) fn validate_isolation(&self, name: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            field: format!("agent_types.{name}.{key}"),
            message,
        };
        let isolated = self.isolation == Isolation::Worktree;
        let set = [
            ("repo", self.repo.is_some()),
            ("base", self.base.is_some()),
            ("branch", self.branch.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, set)| *set && !isolated) {
            return Err(invalid(key, "is used only with isolation = \"worktree\"".into()));
        }
        if !isolated {
            return Ok(());
        }
        match &self.repo {
            None => {
                return Err(invalid(
                    "repo",
                    "isolation = \"worktree\" needs repo: the git repository each run's worktree \
                     is made from"
                        .into(),
                ))
            }
            Some(repo) if repo.as_os_str().is_empty() => {
                return Err(invalid("repo", "names no folder".into()))
            }
            Some(_) => {}
        }
        for (key, value) in [("base", &self.base), ("branch", &self.branch)] {
            match value.as_deref().map(str::trim) {
                Some("") => return Err(invalid(key, "is empty".into())),
                Some(v) if v.starts_with('-') => {
                    return Err(invalid(key, format!("{v:?} may not start with '-'")))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Validates a config file's text.
    fn check(text: &str) -> Result<(), String> {
        let config: Config = toml::from_str(text).unwrap();
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn worktree_settings_are_checked() {
        let ok = "[agent_types.a]\ncommand = [\"x\"]\nisolation = \"worktree\"\nrepo = \"/r\"\n";
        assert!(check(ok).is_ok());
        assert!(check(&format!("{ok}base = \"main\"\nbranch = \"agents/{{run.id}}\"\n")).is_ok());
        let err = check("[agent_types.a]\ncommand = [\"x\"]\nisolation = \"worktree\"\n").unwrap_err();
        assert!(
            err.contains("agent_types.a.repo") && err.contains("needs repo"),
            "{err}"
        );
        let err = check("[agent_types.a]\ncommand = [\"x\"]\nrepo = \"/r\"\n").unwrap_err();
        assert!(
            err.contains("agent_types.a.repo") && err.contains("isolation"),
            "{err}"
        );
        let err = check(&format!("{ok}base = \"--output=x\"\n")).unwrap_err();
        assert!(err.contains("agent_types.a.base"), "{err}");
        let err = check(&format!("{ok}branch = \" \"\n")).unwrap_err();
        assert!(err.contains("agent_types.a.branch"), "{err}");
        let unknown = toml::from_str::<Config>("[agent_types.a]\nisolation = \"container\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("isolation") && unknown.contains("worktree"),
            "{unknown}"
        );
        let config: Config = toml::from_str("[agent_types.a]\ncommand = [\"x\"]\n").unwrap();
        assert_eq!(config.agent_types["a"].isolation, Isolation::None, "the default");
    }
}
