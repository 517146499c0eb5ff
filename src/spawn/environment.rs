//! The environment a program the server starts (a spawned run, a `command` loop's program)
//! begins with. It is built from nothing, so the server's own secrets (the SMTP password, the
//! admin token, whatever its operator exported) never reach a program: a few variables every
//! program expects, the names the config passes through, the config's own `env`, and then the
//! caller's `TASKYARD_*` variables. `PATH` starts with the folder of the server's binary and
//! `TASKYARD_BIN` names it, so a program finds the `taskyard` CLI its prompt tells it to use.
//! A run in a worktree also gets `TASKYARD_WORKTREE` and `TASKYARD_BRANCH` from the supervisor;
//! git, run by the server itself, starts from the allow-list alone ([`inherited`]).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// Variables taken from the server's environment for every program: what shells, locales and
/// tools expect to find, none of them a secret. `LC_*` variables are taken too.
pub const ALLOWED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
];

/// True for a variable taken from the server's environment for every program.
fn allowed(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    ALLOWED.contains(&name.as_ref()) || name.starts_with("LC_")
}

/// The server's own executable, if it can be found.
fn own_binary() -> Option<PathBuf> {
    std::env::current_exe().ok()
}

/// The variables of the server's environment every program gets (the allow-list above).
pub fn inherited() -> BTreeMap<OsString, OsString> {
    std::env::vars_os().filter(|(name, _)| allowed(name)).collect()
}

/// The environment for a program: see the module documentation. `passthrough` names variables
/// of the server's environment to pass on as they are; `env` is set over everything before it.
/// The caller adds its `TASKYARD_*` variables last, so nothing configured can replace them.
pub fn program_env(passthrough: &[String], env: &BTreeMap<String, String>) -> Vec<(OsString, OsString)> {
    let mut out: BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(name, _)| allowed(name) || passthrough.iter().any(|p| OsStr::new(p) == name))
        .collect();
    if let Some(binary) = own_binary() {
        if let Some(folder) = binary.parent() {
            let mut path = vec![folder.to_path_buf()];
            if let Some(inherited) = out.get(OsStr::new("PATH")) {
                path.extend(std::env::split_paths(inherited));
            }
            if let Ok(joined) = std::env::join_paths(path) {
                out.insert("PATH".into(), joined);
            }
        }
        out.insert("TASKYARD_BIN".into(), binary.into_os_string());
    }
    for (name, value) in env {
        out.insert(name.into(), value.into());
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_from_the_allow_list_the_passthrough_and_the_config() {
        // The test process's own environment stands in for the server's.
        let env = BTreeMap::from([("EXTRA".to_string(), "1".to_string())]);
        let vars: BTreeMap<OsString, OsString> = program_env(&["CARGO".into()], &env).into_iter().collect();
        let names: Vec<String> = vars.keys().map(|k| k.to_string_lossy().into_owned()).collect();
        for name in &names {
            assert!(
                allowed(OsStr::new(name)) || ["CARGO", "EXTRA", "TASKYARD_BIN"].contains(&name.as_str()),
                "{name} is not inherited"
            );
        }
        assert_eq!(vars[OsStr::new("EXTRA")], "1");
        assert!(vars.contains_key(OsStr::new("CARGO")), "passed through");
        let bin = PathBuf::from(&vars[OsStr::new("TASKYARD_BIN")]);
        let path = vars[OsStr::new("PATH")].clone();
        assert_eq!(
            std::env::split_paths(&path).next().as_deref(),
            bin.parent(),
            "the server's folder comes first"
        );
    }
}
