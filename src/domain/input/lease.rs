//! Bodies of claims and of the calls made under a lease.

use schemars::JsonSchema;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{capabilities, fence, lease_seconds, limits, line, reject, text, word};
use crate::domain::task::{Deliverable, TaskResult};
use crate::domain::InputError;

/// Body of `POST /tasks/{id}/claim`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimTask {
    /// Lease length in seconds (1..86400; default from config).
    #[schemars(range(min = limits::LEASE_SECONDS.0, max = limits::LEASE_SECONDS.1))]
    pub lease_seconds: Option<u64>,
}

impl ClaimTask {
    /// The checked lease length, if given.
    pub fn parse(self) -> Result<Option<u64>, InputError> {
        lease_seconds("lease_seconds", self.lease_seconds)
    }
}

/// Body of `POST /claims/next`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimNext {
    /// Capabilities to match; default the agent's own.
    pub capabilities: Option<Vec<String>>,
    /// Only tasks of these projects.
    pub projects: Option<Vec<String>>,
    /// Long poll: wait up to this many seconds (max 60) for work to appear.
    #[schemars(range(max = limits::WAIT_SECONDS))]
    pub wait_seconds: Option<u64>,
    /// Lease length in seconds (1..86400; default from config).
    #[schemars(range(min = limits::LEASE_SECONDS.0, max = limits::LEASE_SECONDS.1))]
    pub lease_seconds: Option<u64>,
}

/// A checked claim-next request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimNextSpec {
    /// Capabilities to match, if overridden.
    pub capabilities: Option<Vec<String>>,
    /// Project filter, if any.
    pub projects: Option<Vec<String>>,
    /// Long-poll time in seconds (0 = answer at once).
    pub wait_seconds: u64,
    /// Lease length, if given.
    pub lease_seconds: Option<u64>,
}

impl ClaimNext {
    /// Checks the request.
    pub fn parse(self) -> Result<ClaimNextSpec, InputError> {
        let wait = self.wait_seconds.unwrap_or(0);
        if wait > limits::WAIT_SECONDS {
            return Err(reject(
                "wait_seconds",
                format!("at most {}", limits::WAIT_SECONDS),
            ));
        }
        let projects = match self.projects {
            Some(list) if list.len() > limits::PROJECTS => {
                return Err(reject(
                    "projects",
                    format!("more than {} projects", limits::PROJECTS),
                ))
            }
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, p)| line(&format!("projects[{i}]"), p, limits::PROJECT, false))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        Ok(ClaimNextSpec {
            capabilities: self
                .capabilities
                .map(|c| capabilities("capabilities", &c))
                .transpose()?,
            projects,
            wait_seconds: wait,
            lease_seconds: lease_seconds("lease_seconds", self.lease_seconds)?,
        })
    }
}

/// Body of `POST /tasks/{id}/progress`; an empty report is a heartbeat.
#[derive(Debug, Clone, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportProgress {
    /// The fence from the claim.
    #[schemars(range(min = 1))]
    pub fence: i64,
    /// 0–100.
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i64>,
    /// What is happening now.
    pub note: Option<String>,
    /// Extend the lease to this many seconds from now (default: the claim's length).
    #[schemars(range(min = limits::LEASE_SECONDS.0, max = limits::LEASE_SECONDS.1))]
    pub lease_seconds: Option<u64>,
}

/// A checked progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressSpec {
    /// Fence.
    pub fence: i64,
    /// Percent, if reported.
    pub percent: Option<i64>,
    /// Note, if reported.
    pub note: Option<String>,
    /// New lease length, if given.
    pub lease_seconds: Option<u64>,
}

impl ReportProgress {
    /// Checks the report.
    pub fn parse(self) -> Result<ProgressSpec, InputError> {
        if let Some(p) = self.percent {
            if !(0..=100).contains(&p) {
                return Err(reject("percent", "must be between 0 and 100"));
            }
        }
        Ok(ProgressSpec {
            fence: fence(self.fence)?,
            percent: self.percent,
            note: self.note.map(|n| text("note", &n, limits::NOTE)).transpose()?,
            lease_seconds: lease_seconds("lease_seconds", self.lease_seconds)?,
        })
    }
}

/// Body of `POST /tasks/{id}/complete`.
#[derive(Debug, Clone, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    /// The fence from the claim.
    #[schemars(range(min = 1))]
    pub fence: i64,
    /// What was done.
    pub summary: String,
    /// What it produced.
    #[schemars(length(max = limits::DELIVERABLES))]
    pub deliverables: Option<Vec<Deliverable>>,
    /// Minutes spent.
    #[schemars(range(min = 0, max = 1_000_000))]
    pub time_spent_minutes: Option<i64>,
}

/// A checked completion.
#[derive(Debug, Clone, PartialEq)]
pub struct CompleteSpec {
    /// Fence.
    pub fence: i64,
    /// Summary.
    pub summary: String,
    /// Deliverables.
    pub deliverables: Vec<Deliverable>,
    /// Minutes spent.
    pub time_spent_minutes: Option<i64>,
}

impl CompleteSpec {
    /// The result the completion records on the task.
    pub fn result(&self) -> TaskResult {
        TaskResult {
            summary: self.summary.clone(),
            deliverables: self.deliverables.clone(),
            time_spent_minutes: self.time_spent_minutes,
        }
    }
}

impl CompleteTask {
    /// Checks the completion.
    pub fn parse(self) -> Result<CompleteSpec, InputError> {
        let deliverables = self.deliverables.unwrap_or_default();
        if deliverables.len() > limits::DELIVERABLES {
            return Err(reject(
                "deliverables",
                format!("more than {} items", limits::DELIVERABLES),
            ));
        }
        let deliverables = deliverables
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                Ok(Deliverable {
                    kind: word(&format!("deliverables[{i}].kind"), &d.kind)?,
                    reference: line(&format!("deliverables[{i}].ref"), &d.reference, 2_000, false)?,
                    note: d
                        .note
                        .map(|n| text(&format!("deliverables[{i}].note"), &n, limits::NOTE))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, InputError>>()?;
        if let Some(m) = self.time_spent_minutes {
            if !(0..=1_000_000).contains(&m) {
                return Err(reject("time_spent_minutes", "must be between 0 and 1000000"));
            }
        }
        Ok(CompleteSpec {
            fence: fence(self.fence)?,
            summary: text("summary", &self.summary, limits::SUMMARY)?,
            deliverables,
            time_spent_minutes: self.time_spent_minutes,
        })
    }
}

/// Body of `POST /tasks/{id}/fail`.
#[derive(Debug, Clone, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTask {
    /// The fence from the claim.
    #[schemars(range(min = 1))]
    pub fence: i64,
    /// Why it failed.
    pub reason: String,
    /// May another attempt succeed? Default true; false fails the task for good.
    pub retryable: Option<bool>,
}

impl FailTask {
    /// Checks the failure: (fence, reason, retryable).
    pub fn parse(self) -> Result<(i64, String, bool), InputError> {
        Ok((
            fence(self.fence)?,
            line("reason", &self.reason, limits::NOTE, false)?,
            self.retryable.unwrap_or(true),
        ))
    }
}

/// Body of `POST /tasks/{id}/release`.
#[derive(Debug, Clone, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseTask {
    /// The fence from the claim.
    #[schemars(range(min = 1))]
    pub fence: i64,
    /// Why it is handed back.
    pub note: Option<String>,
}

impl ReleaseTask {
    /// Checks the release: (fence, note).
    pub fn parse(self) -> Result<(i64, Option<String>), InputError> {
        Ok((
            fence(self.fence)?,
            self.note.map(|n| text("note", &n, limits::NOTE)).transpose()?,
        ))
    }
}

/// Body of `POST /tasks/{id}/block`.
#[derive(Debug, Clone, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockTask {
    /// The fence from the claim; required while the task is in progress.
    #[schemars(range(min = 1))]
    pub fence: Option<i64>,
    /// What decision a person must make.
    pub reason: String,
}

impl BlockTask {
    /// Checks the block: (fence, reason).
    pub fn parse(self) -> Result<(Option<i64>, String), InputError> {
        Ok((
            self.fence.map(fence).transpose()?,
            line("reason", &self.reason, limits::NOTE, false)?,
        ))
    }
}

/// Body of `POST /tasks/{id}/unblock` and `/cancel` (both optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// Why.
    pub note: Option<String>,
}

impl NoteBody {
    /// Checks the note.
    pub fn parse(self) -> Result<Option<String>, InputError> {
        self.note
            .map(|n| line("note", &n, limits::NOTE, true))
            .transpose()
    }
}
