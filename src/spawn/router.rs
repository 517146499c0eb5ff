//! The routing rule: for one available task, human, spawn or pull. Pure; the assignment pass
//! applies it (see `assign.rs`).

use crate::config::RoutingConfig;
use crate::domain::{Route, Task};

/// Where a task should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// To a person (email and the manual queue).
    Human(String),
    /// To a new process of this agent type.
    Spawn {
        /// The agent type to start.
        agent_type: String,
        /// Why.
        reason: String,
    },
    /// Left for an agent to claim.
    Pull(String),
}

/// The agent type for a task: the first of its capabilities that the map knows, else the default.
pub fn agent_type_for(task: &Task, routing: &RoutingConfig) -> String {
    task.capabilities
        .iter()
        .find_map(|c| routing.agent_types.get(c))
        .cloned()
        .unwrap_or_else(|| routing.default_agent_type.clone())
}

/// Decides where `task` goes.
pub fn decide(task: &Task, routing: &RoutingConfig) -> Decision {
    let spawn = |reason: String| Decision::Spawn {
        agent_type: agent_type_for(task, routing),
        reason,
    };
    match task.route {
        Route::Human => Decision::Human("its route is human".into()),
        Route::Agent => Decision::Pull("its route is agent".into()),
        Route::Spawn => spawn("its route is spawn".into()),
        Route::Auto if routing.human_kinds.contains(&task.kind) => {
            Decision::Human(format!("{} work goes to people", task.kind))
        }
        Route::Auto if routing.spawn_priorities.contains(&task.priority) => {
            spawn(format!("{} work is spawned", task.priority))
        }
        Route::Auto => Decision::Pull(format!("{} work waits for an agent to claim it", task.priority)),
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::domain::{Priority, Progress, Route, Status, Task, Timestamp};

    /// A plain available task for unit tests.
    pub fn sample_task() -> Task {
        Task {
            id: 1,
            key: None,
            project: "default".into(),
            title: "t".into(),
            description: String::new(),
            priority: Priority::P2,
            kind: "implementation".into(),
            capabilities: vec![],
            paths: vec![],
            acceptance_criteria: vec![],
            depends_on: vec![],
            parent_id: None,
            route: Route::Auto,
            status: Status::Available,
            status_reason: None,
            attempts: 0,
            max_attempts: 3,
            lease: None,
            progress: Progress {
                percent: 0,
                note: None,
                updated_at: None,
            },
            result: None,
            not_before: None,
            created_by: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            claimed_at: None,
            completed_at: None,
            stalled_since: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample_task;
    use super::*;
    use crate::domain::Priority;

    fn task(priority: Priority, kind: &str, caps: &[&str], route: Route) -> Task {
        Task {
            priority,
            kind: kind.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            route,
            ..sample_task()
        }
    }

    #[test]
    fn routes_as_the_design_says() {
        let r = RoutingConfig::default();
        let spawn_type = |t: &Task| match decide(t, &r) {
            Decision::Spawn { agent_type, .. } => Some(agent_type),
            _ => None,
        };
        assert_eq!(
            spawn_type(&task(Priority::P0, "implementation", &["backend"], Route::Auto)).as_deref(),
            Some("backend-specialist")
        );
        assert_eq!(
            spawn_type(&task(Priority::P1, "bug", &["rust", "ui"], Route::Auto)).as_deref(),
            Some("ui-specialist-pro")
        );
        assert_eq!(
            spawn_type(&task(Priority::P1, "bug", &["rust"], Route::Auto)).as_deref(),
            Some("development-lead")
        );
        assert!(matches!(
            decide(&task(Priority::P2, "bug", &[], Route::Auto), &r),
            Decision::Pull(_)
        ));
        assert!(matches!(
            decide(&task(Priority::P0, "architecture", &[], Route::Auto), &r),
            Decision::Human(_)
        ));
        assert!(matches!(
            decide(&task(Priority::P3, "docs", &[], Route::Spawn), &r),
            Decision::Spawn { .. }
        ));
        assert!(matches!(
            decide(&task(Priority::P0, "docs", &[], Route::Agent), &r),
            Decision::Pull(_)
        ));
        assert!(matches!(
            decide(&task(Priority::P3, "docs", &[], Route::Human), &r),
            Decision::Human(_)
        ));
    }
}
