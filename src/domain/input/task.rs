//! Bodies that create and edit tasks.

use schemars::JsonSchema;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{capabilities, limits, line, reject, text, word};
use crate::domain::paths;
use crate::domain::{InputError, Priority, Route, TaskRef};

fn key(field: &str, value: &str) -> Result<String, InputError> {
    let key = line(field, value, limits::KEY, false)?;
    if key.chars().all(|c| c.is_ascii_digit()) {
        return Err(reject(
            field,
            "a key must not be all digits (digits name task ids)",
        ));
    }
    Ok(key)
}

fn max_attempts(value: Option<i64>) -> Result<Option<i64>, InputError> {
    match value {
        Some(n) if !(1..=limits::MAX_ATTEMPTS).contains(&n) => Err(reject(
            "max_attempts",
            format!("must be between 1 and {}", limits::MAX_ATTEMPTS),
        )),
        other => Ok(other),
    }
}

fn criteria(values: &[String]) -> Result<Vec<String>, InputError> {
    if values.len() > limits::CRITERIA {
        return Err(reject(
            "acceptance_criteria",
            format!("more than {} items", limits::CRITERIA),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, c)| text(&format!("acceptance_criteria[{i}]"), c, limits::CRITERION))
        .collect()
}

fn depends_on(values: &[TaskRef]) -> Result<Vec<TaskRef>, InputError> {
    if values.len() > limits::DEPENDS_ON {
        return Err(reject(
            "depends_on",
            format!("more than {} dependencies", limits::DEPENDS_ON),
        ));
    }
    let mut out: Vec<TaskRef> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        if let TaskRef::Key(k) = value {
            key(&format!("depends_on[{i}]"), k)?;
        }
        if !out.contains(value) {
            out.push(value.clone());
        }
    }
    Ok(out)
}

/// Body of `POST /tasks` (and each item of a batch).
#[derive(Debug, Clone, Default, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Optional unique key; creating a task whose key exists returns the existing task.
    #[schemars(length(min = 1, max = limits::KEY))]
    pub key: Option<String>,
    /// Project name; default `default`.
    #[schemars(length(min = 1, max = limits::PROJECT))]
    pub project: Option<String>,
    /// One-line title (required).
    #[schemars(length(min = 1, max = limits::TITLE))]
    pub title: String,
    /// Markdown description.
    pub description: Option<String>,
    /// `P0`..`P3`; also `P1-HIGH`, `high`, … Default `P2`.
    #[schema(value_type = Option<String>, example = "P1")]
    pub priority: Option<Priority>,
    /// A lowercase word; default `implementation`.
    pub kind: Option<String>,
    /// Capabilities an agent needs, e.g. `["backend","rust"]`.
    #[schemars(length(max = limits::CAPABILITIES))]
    pub capabilities: Option<Vec<String>>,
    /// What "done" means.
    #[schemars(length(max = limits::CRITERIA))]
    pub acceptance_criteria: Option<Vec<String>>,
    /// Ids or keys of tasks that must complete first.
    #[schema(value_type = Option<Vec<Object>>)]
    #[schemars(length(max = limits::DEPENDS_ON))]
    pub depends_on: Option<Vec<TaskRef>>,
    /// The task this one was split from.
    #[schemars(range(min = 1))]
    pub parent_id: Option<i64>,
    /// auto (default), agent, human, spawn.
    pub route: Option<Route>,
    /// Claims allowed (default 3).
    #[schemars(range(min = 1, max = limits::MAX_ATTEMPTS))]
    pub max_attempts: Option<i64>,
    /// Files it expects to touch, as glob patterns (`src/auth/**`; at most 64): a claim
    /// reserves them, and claim-next skips it while another lease holds one of them.
    #[schemars(length(max = 64))]
    pub paths: Option<Vec<String>>,
}

/// A checked task to create.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Unique key, if any.
    pub key: Option<String>,
    /// Project.
    pub project: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Priority.
    pub priority: Priority,
    /// Kind.
    pub kind: String,
    /// Required capabilities.
    pub capabilities: Vec<String>,
    /// Acceptance criteria.
    pub acceptance_criteria: Vec<String>,
    /// Dependencies by id or key.
    pub depends_on: Vec<TaskRef>,
    /// Parent task.
    pub parent_id: Option<i64>,
    /// Route.
    pub route: Route,
    /// Claims allowed.
    pub max_attempts: i64,
    /// Path patterns it expects to touch.
    pub paths: Vec<String>,
}

impl CreateTask {
    /// Checks every field and fills in defaults.
    pub fn parse(self) -> Result<TaskSpec, InputError> {
        Ok(TaskSpec {
            key: self.key.as_deref().map(|k| key("key", k)).transpose()?,
            project: match &self.project {
                Some(p) => line("project", p, limits::PROJECT, false)?,
                None => "default".to_string(),
            },
            title: line("title", &self.title, limits::TITLE, false)?,
            description: text(
                "description",
                self.description.as_deref().unwrap_or(""),
                limits::DESCRIPTION,
            )?,
            priority: self.priority.unwrap_or(Priority::P2),
            kind: match &self.kind {
                Some(k) => word("kind", k)?,
                None => "implementation".to_string(),
            },
            capabilities: capabilities("capabilities", self.capabilities.as_deref().unwrap_or(&[]))?,
            acceptance_criteria: criteria(self.acceptance_criteria.as_deref().unwrap_or(&[]))?,
            depends_on: depends_on(self.depends_on.as_deref().unwrap_or(&[]))?,
            parent_id: match self.parent_id {
                Some(id) if id < 1 => return Err(reject("parent_id", "must be a task id")),
                other => other,
            },
            route: self.route.unwrap_or_default(),
            max_attempts: max_attempts(self.max_attempts)?.unwrap_or(3),
            paths: paths::patterns("paths", self.paths.as_deref().unwrap_or(&[]))?,
        })
    }
}

/// Body of `POST /tasks/batch`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// Up to 1,000 tasks, created all or nothing; `depends_on` may name keys from the same batch.
    pub tasks: Vec<CreateTask>,
}

impl CreateBatch {
    /// Checks every task; errors name the item, e.g. `tasks[3].title`.
    pub fn parse(self) -> Result<Vec<TaskSpec>, InputError> {
        if self.tasks.is_empty() {
            return Err(reject("tasks", "must hold at least one task"));
        }
        if self.tasks.len() > limits::BATCH {
            return Err(reject("tasks", format!("more than {} tasks", limits::BATCH)));
        }
        self.tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.parse()
                    .map_err(|e| InputError::new(format!("tasks[{i}].{}", e.field), e.message))
            })
            .collect()
    }
}

/// Body of `PATCH /tasks/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTask {
    /// New project.
    pub project: Option<String>,
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New priority.
    #[schema(value_type = Option<String>)]
    pub priority: Option<Priority>,
    /// New kind.
    pub kind: Option<String>,
    /// New capabilities.
    pub capabilities: Option<Vec<String>>,
    /// New acceptance criteria.
    pub acceptance_criteria: Option<Vec<String>>,
    /// New dependencies (replaces the old list).
    #[schema(value_type = Option<Vec<Object>>)]
    pub depends_on: Option<Vec<TaskRef>>,
    /// New route.
    pub route: Option<Route>,
    /// New claim limit.
    pub max_attempts: Option<i64>,
    /// New path patterns (replaces the old list).
    pub paths: Option<Vec<String>>,
}

/// A checked edit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPatch {
    /// New project.
    pub project: Option<String>,
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New priority.
    pub priority: Option<Priority>,
    /// New kind.
    pub kind: Option<String>,
    /// New capabilities.
    pub capabilities: Option<Vec<String>>,
    /// New acceptance criteria.
    pub acceptance_criteria: Option<Vec<String>>,
    /// New dependencies.
    pub depends_on: Option<Vec<TaskRef>>,
    /// New route.
    pub route: Option<Route>,
    /// New claim limit.
    pub max_attempts: Option<i64>,
    /// New path patterns.
    pub paths: Option<Vec<String>>,
}

impl PatchTask {
    /// Checks every present field.
    pub fn parse(self) -> Result<TaskPatch, InputError> {
        let patch = TaskPatch {
            project: self
                .project
                .map(|p| line("project", &p, limits::PROJECT, false))
                .transpose()?,
            title: self
                .title
                .map(|t| line("title", &t, limits::TITLE, false))
                .transpose()?,
            description: self
                .description
                .map(|d| text("description", &d, limits::DESCRIPTION))
                .transpose()?,
            priority: self.priority,
            kind: self.kind.map(|k| word("kind", &k)).transpose()?,
            capabilities: self
                .capabilities
                .map(|c| capabilities("capabilities", &c))
                .transpose()?,
            acceptance_criteria: self.acceptance_criteria.map(|c| criteria(&c)).transpose()?,
            depends_on: self.depends_on.map(|d| depends_on(&d)).transpose()?,
            route: self.route,
            max_attempts: max_attempts(self.max_attempts)?,
            paths: self.paths.map(|p| paths::patterns("paths", &p)).transpose()?,
        };
        if patch == TaskPatch::default() {
            return Err(reject(
                "body",
                "names no field to change (to route the task afresh, POST /api/v1/tasks/{id}/reroute)",
            ));
        }
        Ok(patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(title: &str) -> CreateTask {
        CreateTask {
            title: title.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_in() {
        let spec = task("Fix login").parse().unwrap();
        assert_eq!(spec.project, "default");
        assert_eq!(spec.priority, Priority::P2);
        assert_eq!(spec.kind, "implementation");
        assert_eq!(spec.max_attempts, 3);
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        assert_eq!(task("  ").parse().unwrap_err().field, "title");
        let long = "x".repeat(limits::TITLE + 1);
        assert_eq!(task(&long).parse().unwrap_err().field, "title");
        let bad_key = CreateTask {
            key: Some("123".into()),
            ..task("t")
        };
        assert_eq!(bad_key.parse().unwrap_err().field, "key");
        let bad_cap = CreateTask {
            capabilities: Some(vec!["ok".into(), "no way".into()]),
            ..task("t")
        };
        assert_eq!(bad_cap.parse().unwrap_err().field, "capabilities[1]");
        let bad_kind = CreateTask {
            kind: Some("Two Words".into()),
            ..task("t")
        };
        assert_eq!(bad_kind.parse().unwrap_err().field, "kind");
    }

    #[test]
    fn capabilities_are_normalised() {
        let caps = capabilities("c", &["Rust".into(), "rust".into(), "backend".into()]).unwrap();
        assert_eq!(caps, vec!["rust", "backend"]);
    }

    #[test]
    fn batch_errors_name_the_item() {
        let batch = CreateBatch {
            tasks: vec![task("a"), task("")],
        };
        assert_eq!(batch.parse().unwrap_err().field, "tasks[1].title");
    }
}
