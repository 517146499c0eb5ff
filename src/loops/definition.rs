//! Loop definitions: one TOML file per loop (`kind`, `schedule`, `enabled`, and the kind's
//! settings), the file name being the loop's name. The repository's `loops/` folder holds the
//! defaults, which are compiled in; a file in the loops folder adds a loop or, under a built-in
//! loop's name, replaces it (`enabled = false` turns it off).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{build, Loop, Span};

/// When a loop runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every so often (`every 10s`).
    Every(Duration),
    /// A 6-field cron expression (sec min hour day month weekday), in UTC.
    Cron(String),
}

impl Schedule {
    /// Parses `every 10s` or a 6-field cron expression.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if let Some(span) = text.strip_prefix("every ") {
            let Span(every) = Span::parse(span)?;
            if every < Duration::from_secs(1) {
                return Err("a loop may run at most once a second".into());
            }
            return Ok(Schedule::Every(every));
        }
        if text.split_whitespace().count() != 6 {
            return Err(format!(
                "{text:?} is neither `every <duration>` nor a 6-field cron expression (sec min hour day month weekday)"
            ));
        }
        tokio_cron_scheduler::Job::new_async(text, |_, _| Box::pin(async {}))
            .map_err(|e| format!("{text:?} is not a valid cron expression: {e}"))?;
        Ok(Schedule::Cron(text.to_string()))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) if d.as_secs() % 3_600 == 0 => write!(f, "every {}h", d.as_secs() / 3_600),
            Schedule::Every(d) if d.as_secs() % 60 == 0 => write!(f, "every {}m", d.as_secs() / 60),
            Schedule::Every(d) => write!(f, "every {}s", d.as_secs()),
            Schedule::Cron(expr) => f.write_str(expr),
        }
    }
}

/// One configured loop.
#[derive(Clone)]
pub struct LoopDef {
    /// Its name (the file name without `.toml`).
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Disabled loops are listed and can be run by hand, but never scheduled.
    pub enabled: bool,
    /// Where it was defined: a file, or `built-in`.
    pub source: String,
    /// The configured loop.
    pub imp: Arc<dyn Loop>,
}

impl fmt::Debug for LoopDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopDef")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("schedule", &self.schedule)
            .field("enabled", &self.enabled)
            .field("source", &self.source)
            .finish()
    }
}

/// A loop file that could not be used, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("loop definition {file}: {field}: {message}")]
pub struct LoopDefError {
    /// The file (or `built-in:<name>`).
    pub file: String,
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The default loops, as shipped in the repository's `loops/` folder.
const BUILTIN: &[(&str, &str)] = &[
    ("system-status", include_str!("../../loops/system-status.toml")),
    ("agent-liveness", include_str!("../../loops/agent-liveness.toml")),
    ("lease-reaper", include_str!("../../loops/lease-reaper.toml")),
    (
        "dependency-release",
        include_str!("../../loops/dependency-release.toml"),
    ),
    ("stall-detector", include_str!("../../loops/stall-detector.toml")),
    (
        "retention-backup",
        include_str!("../../loops/retention-backup.toml"),
    ),
    ("inbox", include_str!("../../loops/inbox.toml")),
    ("assignment", include_str!("../../loops/assignment.toml")),
    ("notify", include_str!("../../loops/notify.toml")),
    ("digest", include_str!("../../loops/digest.toml")),
];

/// The compiled-in default loops.
pub fn builtin_definitions() -> Result<Vec<LoopDef>, LoopDefError> {
    BUILTIN
        .iter()
        .map(|(name, text)| parse(name, text, &format!("built-in:{name}")))
        .collect()
}

/// The effective loops: the built-in defaults (when `builtin`), each replaced by the file of the
/// same name in `dir`, then the other loops of `dir` (every `*.toml` in it), by name. A missing
/// `dir` adds nothing.
pub fn load_definitions(dir: &Path, builtin: bool) -> Result<Vec<LoopDef>, LoopDefError> {
    let mut defs = if builtin {
        builtin_definitions()?
    } else {
        Vec::new()
    };
    if !dir.exists() {
        return Ok(defs);
    }
    let unreadable = |file: &Path, e: std::io::Error| LoopDefError {
        file: file.display().to_string(),
        field: "file".into(),
        message: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| unreadable(file, e))?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let def = parse(&name, &text, &file.display().to_string())?;
        match defs.iter_mut().find(|d| d.name == def.name) {
            Some(builtin) => *builtin = def,
            None => defs.push(def),
        }
    }
    Ok(defs)
}

/// Parses one loop file.
pub fn parse(name: &str, text: &str, source: &str) -> Result<LoopDef, LoopDefError> {
    let fail = |field: &str, message: String| LoopDefError {
        file: source.to_string(),
        field: field.to_string(),
        message,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(fail(
            "name",
            format!("{name:?}: a loop's file name may hold letters, digits, '-' and '_' only"),
        ));
    }
    // The parser's own rendering, with the line, the column and the snippet on lines of their own.
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| fail("file", e.to_string().trim_end().to_string()))?;
    let mut take_str = |key: &str| -> Result<Option<String>, LoopDefError> {
        match table.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(fail(key, format!("must be a string, not {}", other.type_str()))),
        }
    };
    let kind =
        take_str("kind")?.ok_or_else(|| fail("kind", "missing; every loop file needs a kind".into()))?;
    let schedule = take_str("schedule")?
        .ok_or_else(|| fail("schedule", "missing (`every 10s` or a cron expression)".into()))?;
    let schedule = Schedule::parse(&schedule).map_err(|e| fail("schedule", e))?;
    let enabled = match table.remove("enabled") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(other) => {
            return Err(fail(
                "enabled",
                format!("must be true or false, not {}", other.type_str()),
            ))
        }
    };
    let imp = build(name, &kind, &table).map_err(|e| {
        if e.starts_with("unknown kind") {
            fail("kind", e)
        } else if let Some(key) = unknown_key(&e) {
            fail(key, unknown_key_message(key, &kind, &e))
        } else {
            fail("settings", e)
        }
    })?;
    Ok(LoopDef {
        name: name.to_string(),
        kind,
        schedule,
        enabled,
        source: source.to_string(),
        imp,
    })
}

/// The key a serde "unknown field `x`, expected …" message names.
fn unknown_key(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// "unknown setting" with what the kind does take, and the likely intended key.
fn unknown_key_message(key: &str, kind: &str, serde_message: &str) -> String {
    let expected: Vec<&str> = match serde_message.split_once("expected ") {
        Some((_, list)) => list
            .split(['`', ','])
            .map(str::trim)
            .filter(|w| !w.is_empty() && *w != "one of" && *w != "or")
            .collect(),
        None => Vec::new(),
    };
    let mut known = vec!["kind", "schedule", "enabled"];
    known.extend(expected.iter().copied());
    let takes = if expected.is_empty() {
        format!("a {kind} loop takes no settings of its own")
    } else {
        format!("a {kind} loop takes {}", expected.join(", "))
    };
    match known.iter().find(|k| close(key, k)) {
        Some(k) => format!("unknown setting (did you mean `{k}`?); {takes}"),
        None => format!("unknown setting; {takes} (besides kind, schedule and enabled)"),
    }
}

/// True when `a` is at most two single-character edits away from `b`.
fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(
            Schedule::parse("every 10s"),
            Ok(Schedule::Every(Duration::from_secs(10)))
        );
        assert_eq!(Schedule::parse("every 5m").unwrap().to_string(), "every 5m");
        assert!(matches!(Schedule::parse("0 0 3 * * *"), Ok(Schedule::Cron(_))));
        assert!(Schedule::parse("every 100ms").is_err());
        assert!(Schedule::parse("0 3 * * *").is_err(), "5 fields");
        assert!(Schedule::parse("0 0 99 * * *").is_err());
        assert!(Schedule::parse("hourly").is_err());
    }

    #[test]
    fn files_add_loops_and_replace_builtin_ones_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lease-reaper.toml"),
            "kind = \"lease-reaper\"\nschedule = \"every 1m\"\nenabled = false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("nightly.toml"),
            "kind = \"command\"\nschedule = \"every 1h\"\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let defs = load_definitions(dir.path(), true).unwrap();
        assert_eq!(defs.len(), BUILTIN.len() + 1, "every built-in loop stays");
        let reaper = defs.iter().find(|d| d.name == "lease-reaper").unwrap();
        assert!(!reaper.enabled && reaper.source.ends_with("lease-reaper.toml"));
        let notify = defs.iter().find(|d| d.name == "notify").unwrap();
        assert_eq!(notify.source, "built-in:notify");
        assert!(defs.iter().any(|d| d.name == "nightly"));
        let only = load_definitions(dir.path(), false).unwrap();
        assert_eq!(only.len(), 2, "without the built-in loops, only the folder's");
        let none = load_definitions(&dir.path().join("absent"), true).unwrap();
        assert_eq!(none.len(), BUILTIN.len());
    }

    #[test]
    fn the_builtin_defaults_parse() {
        let defs = builtin_definitions().unwrap();
        assert_eq!(defs.len(), BUILTIN.len());
        assert!(defs.iter().all(|d| d.enabled));
    }

    #[test]
    fn errors_name_file_and_field() {
        let err = parse(
            "x",
            "kind = \"lease-reaper\"\nschedule = \"sometimes\"\n",
            "loops/x.toml",
        )
        .unwrap_err();
        assert_eq!(
            (err.file.as_str(), err.field.as_str()),
            ("loops/x.toml", "schedule")
        );
        let err = parse("x", "kind = \"nope\"\nschedule = \"every 1s\"\n", "f").unwrap_err();
        assert_eq!(err.field, "kind");
        let err = parse("x", "schedule = \"every 1s\"\n", "f").unwrap_err();
        assert_eq!(err.field, "kind");
        let err = parse(
            "x",
            "kind = \"agent-liveness\"\nschedule = \"every 1s\"\nofline_after = \"5m\"\n",
            "f",
        )
        .unwrap_err();
        assert_eq!(err.field, "ofline_after");
        assert!(err.message.contains("did you mean `offline_after`"), "{err}");
        let err = parse(
            "x",
            "kind = \"lease-reaper\"\nschedule = \"every 1s\"\nenabeld = true\n",
            "f",
        )
        .unwrap_err();
        assert_eq!(err.field, "enabeld");
        assert!(err.message.contains("did you mean `enabled`"), "{err}");
        assert!(err.message.contains("takes no settings"), "{err}");
        let err = parse("x", "kind = \"lease-reaper\"\nschedule = = 1\n", "f").unwrap_err();
        assert!(
            err.message.contains("line 2") && err.message.contains('\n'),
            "{err}"
        );
        let err = parse(
            "x",
            "kind = \"lease-reaper\"\nschedule = \"every 1s\"\nenabled = \"yes\"\n",
            "f",
        )
        .unwrap_err();
        assert_eq!(err.field, "enabled");
    }
}
