//! The task model and its rules: statuses, priorities, transitions and validated input types.
//! Nothing here does I/O; the store and the HTTP layer build on these types.

pub mod agent;
pub mod cancel;
pub mod claim;
pub mod event;
pub mod handoff;
pub mod input;
pub mod lifecycle;
pub mod notification;
pub mod paths;
pub mod plan;
mod refused;
pub mod reservation;
pub mod run;
pub mod task;
pub mod time;
pub mod webhook;

pub use agent::{Agent, Principal, Role};
pub use claim::{Refusal, Routed};
pub use event::Event;
pub use event::{Because, BlockedBy, Change, NewEvent};
pub use notification::{LinkAction, NewNotification, Notification, NotificationStatus, Reason};
pub use refused::Refused;
pub use reservation::Reservation;
pub use run::{BranchTip, Run, RunStatus, RunWorktree};
pub use task::{Lease, Priority, Progress, Route, Status, Task, TaskRef, TaskResult};
pub use time::Timestamp;

/// A rejected input value: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    /// The JSON path of the offending field, e.g. `depends_on[2]`.
    pub field: String,
    /// What is wrong, written for the caller.
    pub message: String,
}

impl InputError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
