//! Settings that are valid but probably not what was meant: routing to agent types without a
//! command, work for people with nobody to tell, agent programs that are not there,
//! placeholders inside shell strings, and worktree settings that cannot work. Logged at startup and listed by `taskyard config check`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{AgentTypeConfig, Config, Isolation};

/// Shells whose `-c` argument is a script.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "fish"];

impl Config {
    /// True when some agent type has a command: only then is anything ever spawned.
    pub fn spawner_on(&self) -> bool {
        self.agent_types.values().any(|t| !t.command.is_empty())
    }

    /// Everything in this config that is probably a mistake, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.spawner_on() {
            // Which capabilities lead to each agent type the router may pick.
            let mut targets: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (capability, agent_type) in &self.routing.agent_types {
                targets.entry(agent_type).or_default().push(capability);
            }
            targets.entry(&self.routing.default_agent_type).or_default();
            for (agent_type, capabilities) in targets {
                if self
                    .agent_types
                    .get(agent_type)
                    .is_some_and(|t| !t.command.is_empty())
                {
                    continue;
                }
                let via = if agent_type == self.routing.default_agent_type {
                    "the default agent type".to_string()
                } else {
                    format!("the agent type for {}", capabilities.join(", "))
                };
                out.push(format!(
                    "routing: {agent_type} ({via}) has no command in [agent_types.{agent_type}], so \
                     work the router spawns as {agent_type} goes to people instead"
                ));
            }
        }
        let nobody = self.humans.is_empty() && self.notify.default_to.is_empty();
        if nobody {
            out.push(format!(
                "notify: no [[humans]] and no notify.default_to, so nobody is emailed about work for \
                 people (kinds {}, route human, spawns that cannot start, final failures, blocks); \
                 it waits in the dashboard's manual queue",
                self.routing.human_kinds.join(", ")
            ));
        }
        for (name, t) in &self.agent_types {
            out.extend(command_warnings(name, t));
            out.extend(isolation_warnings(name, t));
        }
        out
    }
}

/// What is doubtful about one agent type's command.
fn command_warnings(name: &str, t: &AgentTypeConfig) -> Vec<String> {
    let Some(program) = t.command.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !program.contains('{') && !findable(program, t.workdir.as_deref()) {
        out.push(format!(
            "agent_types.{name}.command: the program {program:?} is not found{}; its runs would \
             fail to start and their tasks go to people",
            if program.contains('/') { "" } else { " on PATH" }
        ));
    }
    let shell = Path::new(program)
        .file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| SHELLS.contains(&f));
    let script = t.command.iter().skip_while(|a| !a.starts_with("-c")).nth(1);
    if shell && script.is_some_and(|s| s.contains("{task.") || s.contains("{prompt") || s.contains("{run.")) {
        out.push(format!(
            "agent_types.{name}.command: a placeholder inside a `{program} -c` script turns task text \
             into shell code; pass it as an argument of its own (\"{{prompt}}\" after the script, read \
             as \"$1\"), or read $TASKYARD_PROMPT_FILE"
        ));
    }
    out
}

/// What is doubtful about one agent type's worktree settings.
fn isolation_warnings(name: &str, t: &AgentTypeConfig) -> Vec<String> {
    if t.isolation != Isolation::Worktree {
        return Vec::new();
    }
    let mut out = Vec::new();
    if t.workdir.is_some() {
        out.push(format!(
            "agent_types.{name}.workdir: not used, since each run works in its own worktree of repo"
        ));
    }
    if let Some(repo) = t.repo.as_deref().filter(|r| !r.is_dir()) {
        out.push(format!(
            "agent_types.{name}.repo: {} is not a folder; its runs would fail to start and their \
             tasks go to people",
            repo.display()
        ));
    }
    out
}

/// True when `program` names an executable file: a path (relative ones from `workdir` when
/// set), or a name found on `PATH`.
fn findable(program: &str, workdir: Option<&Path>) -> bool {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = Path::new(program);
        return match workdir {
            Some(dir) if path.is_relative() => executable(&dir.join(path)),
            _ => executable(path),
        };
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| executable(&dir.join(program))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_default_config_only_says_nobody_is_told() {
        let warnings = Config::default().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("nobody is emailed"), "{warnings:?}");
        let told = config("[notify]\ndefault_to = [\"lead@example.com\"]\n");
        assert!(told.warnings().is_empty());
    }

    #[test]
    fn routing_to_types_without_commands_is_named() {
        let c = config(
            "[notify]\ndefault_to = [\"l@example.com\"]\n[agent_types.development-lead]\ncommand = [\"true\"]\n",
        );
        let warnings = c.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("backend-specialist (the agent type for backend)")),
            "{warnings:?}"
        );
        assert!(!warnings
            .iter()
            .any(|w| w.starts_with("routing: development-lead")));
    }

    #[test]
    fn missing_programs_and_shell_placeholders_are_named() {
        let c = config(
            "[notify]\ndefault_to = [\"l@example.com\"]\n[routing]\nagent_types = {}\n\
             default_agent_type = \"a\"\n[agent_types.a]\ncommand = [\"sh\", \"-c\", \"claude -p '{prompt}'\"]\n\
             [agent_types.b]\ncommand = [\"no-such-program-here\"]\n[agent_types.c]\n\
             command = [\"sh\", \"-c\", \"claude -p \\\"$1\\\"\", \"sh\", \"{prompt}\"]\n",
        );
        let warnings = c.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("agent_types.a.command: a placeholder")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("agent_types.b.command: the program \"no-such-program-here\"")),
            "{warnings:?}"
        );
        assert!(
            !warnings.iter().any(|w| w.starts_with("agent_types.c")),
            "a placeholder as its own argument is fine: {warnings:?}"
        );
    }

    #[test]
    fn worktree_settings_that_cannot_work_are_named() {
        let c = config(
            "[agent_types.a]\ncommand = [\"true\"]\nisolation = \"worktree\"\n\
             repo = \"/no/such/repo\"\nworkdir = \"/tmp\"\n",
        );
        let warnings = c.warnings();
        for field in ["agent_types.a.workdir", "agent_types.a.repo"] {
            assert!(
                warnings.iter().any(|w| w.starts_with(field)),
                "{field}: {warnings:?}"
            );
        }
    }
}
