//! `why`: whether a task is claimable now and why, with its dependencies, dependents and the
//! router's decisions. Claimable means what claim-next does (see `domain::claim`).

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::claim::{self, Refusal, Routed};
use crate::domain::{Event, Lease, Route, Status, Task, Timestamp};

use super::{Store, StoreError, StoreResult};

/// A dependency as `why` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DependencyState {
    /// Its id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// Its status.
    pub status: Status,
}

/// Why a task is or is not claimable right now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Why {
    /// The task.
    pub task_id: i64,
    /// Its status.
    pub status: Status,
    /// Could an agent claim it right now?
    pub claimable: bool,
    /// Plain-language reasons, most important first.
    pub reasons: Vec<String>,
    /// Its dependencies and their states.
    pub dependencies: Vec<DependencyState>,
    /// The tasks that depend on it, and their states.
    pub dependents: Vec<DependencyState>,
    /// The current lease, if any.
    pub lease: Option<Lease>,
    /// Claims used and allowed.
    pub attempts: i64,
    /// Claims allowed.
    pub max_attempts: i64,
    /// Capabilities a claimer needs.
    pub capabilities: Vec<String>,
    /// The router's current decision, if it made one.
    pub routing: Option<Routing>,
    /// Routing decisions and stall flags recorded for it, oldest first.
    pub decisions: Vec<Decision>,
}

/// The router's current decision on a task.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Routing {
    /// `human`, `spawn`, `pull` or `wait`.
    #[schema(value_type = String)]
    #[serde(serialize_with = "display")]
    pub decision: Routed,
    /// Why, in words.
    pub reason: String,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// A recorded decision about a task: a routing decision or a stall.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Decision {
    /// The event's kind: `task.routed` or `task.stalled`.
    pub kind: String,
    /// When it was made.
    pub at: Timestamp,
    /// The event's data (`decision`, `reason`, `fallback` for routing).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// The decision as a sentence.
    pub text: String,
}

impl Decision {
    /// The decision an event records, if it records one.
    fn from_event(e: &Event) -> Option<Decision> {
        let text = match e.kind.as_str() {
            "task.routed" => {
                let reason = e.data["reason"].as_str().unwrap_or_default();
                match e.data["decision"].as_str().and_then(|d| d.parse::<Routed>().ok()) {
                    Some(decision) => decision.sentence(reason),
                    None => reason.to_string(),
                }
            }
            "task.stalled" => format!(
                "stalled: no progress since {}",
                e.data["last_progress_at"].as_str().unwrap_or("it was claimed")
            ),
            _ => return None,
        };
        Some(Decision {
            kind: e.kind.clone(),
            at: e.at,
            data: e.data.clone(),
            text,
        })
    }
}

impl Store {
    /// Tasks linked to `id` by `sql` (one bound id; selects id, title, status).
    async fn linked(&self, sql: &str, id: i64) -> StoreResult<Vec<DependencyState>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(sql).bind(id).fetch_all(&self.reader).await?;
        rows.into_iter()
            .map(|(id, title, status)| {
                Ok(DependencyState {
                    id,
                    title,
                    status: status.parse().map_err(StoreError::Corrupt)?,
                })
            })
            .collect()
    }

    /// Explains whether `task` is claimable and why: claimable exactly when claim-next, asked
    /// now by an agent with the task's capabilities, would hand it out.
    pub async fn why(&self, task: &Task) -> StoreResult<Why> {
        let now = Timestamp::now();
        let dependencies = self
            .linked(
                "SELECT t.id, t.title, t.status FROM task_deps d JOIN tasks t ON t.id = d.depends_on_id \
                 WHERE d.task_id = ? ORDER BY t.id",
                task.id,
            )
            .await?;
        let dependents = self
            .linked(
                "SELECT t.id, t.title, t.status FROM task_deps d JOIN tasks t ON t.id = d.task_id \
                 WHERE d.depends_on_id = ? ORDER BY t.id LIMIT 500",
                task.id,
            )
            .await?;
        let routing = self.routing_of(task.id).await?;
        let refusal = claim::refusal(
            task,
            routing.as_ref().map(|r| r.decision),
            &self.options.human_kinds,
            false,
            now,
        );
        let mut reasons = Vec::new();
        match task.status {
            Status::Pending => {
                let waiting: Vec<String> = dependencies
                    .iter()
                    .filter(|d| d.status != Status::Completed)
                    .map(|d| format!("#{} ({})", d.id, d.status))
                    .collect();
                reasons.push(format!(
                    "waiting for dependencies to complete: {}",
                    waiting.join(", ")
                ));
            }
            Status::InProgress => {
                if let (Some(since), Some(at)) = (task.stalled_since, task.progress.updated_at) {
                    reasons.push(format!(
                        "stalled since {}: no progress reported since {}",
                        since.to_rfc3339(),
                        at.to_rfc3339()
                    ));
                }
                if let Some(lease) = &task.lease {
                    if lease.expires_at <= now {
                        reasons.push(format!(
                            "the lease of {} expired at {}; claim-next returns the task first",
                            lease.holder,
                            lease.expires_at.to_rfc3339()
                        ));
                    } else {
                        reasons.push(format!(
                            "held by {} (fence {}) until {}",
                            lease.holder,
                            lease.fence,
                            lease.expires_at.to_rfc3339()
                        ));
                    }
                }
            }
            Status::Blocked => reasons.push(format!(
                "blocked: {}; waiting for a person to lift the block",
                task.status_reason.as_deref().unwrap_or("needs a decision")
            )),
            Status::Available => {}
            final_status => reasons.push(format!("{final_status}: a final status, never claimable again")),
        }
        match &refusal {
            None => reasons
                .push("ready: claim-next hands it to the next agent with the required capabilities".into()),
            Some(Refusal::NotAvailable(_)) => {}
            Some(Refusal::BackingOff(at)) => reasons.push(format!(
                "backing off after a failed attempt; claimable from {}",
                at.to_rfc3339()
            )),
            Some(Refusal::AttemptsUsed(max)) => reasons.push(format!(
                "all {max} attempts are used; raise max_attempts (taskyard task edit {} \
                 --max-attempts N) to run it again",
                task.id
            )),
            Some(Refusal::ForPeople) if task.route == Route::Human => {
                reasons.push("waiting for a person: its route is human".into())
            }
            Some(Refusal::ForPeople) => reasons.push(format!(
                "waiting for a person: {} work goes to people (routing.human_kinds)",
                task.kind
            )),
            Some(Refusal::RoutedToPeople) => reasons.push(format!(
                "waiting for a person: {}",
                routing
                    .as_ref()
                    .map(|r| r.reason.as_str())
                    .unwrap_or("the router sent it to people")
            )),
            Some(Refusal::ForSpawner) => {
                reasons.push("its route is spawn: only an agent process the server starts takes it".into())
            }
        }
        if !task.capabilities.is_empty() && !task.status.is_final() {
            reasons.push(format!(
                "a claimer needs the capabilities {}",
                task.capabilities.join(", ")
            ));
        }
        let decisions = self
            .task_events(task.id, 200)
            .await?
            .into_iter()
            .filter_map(|e| Decision::from_event(&e))
            .collect();
        Ok(Why {
            task_id: task.id,
            status: task.status,
            claimable: refusal.is_none(),
            reasons,
            dependencies,
            dependents,
            lease: task.lease.clone(),
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            capabilities: task.capabilities.clone(),
            routing,
            decisions,
        })
    }

    /// The router's current decision on task `id`, if it made one.
    pub async fn routing_of(&self, id: i64) -> StoreResult<Option<Routing>> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT routed_to, routed_reason FROM tasks WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.reader)
                .await?;
        match row {
            Some((Some(decision), reason)) => Ok(Some(Routing {
                decision: decision.parse().map_err(StoreError::Corrupt)?,
                reason: reason.unwrap_or_default(),
            })),
            _ => Ok(None),
        }
    }
}
