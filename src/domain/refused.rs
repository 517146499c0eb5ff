//! Why the registry refuses an operation: the refusals every layer shares (the store decides
//! them, HTTP and MCP answer them with a status and a stable code).

use super::InputError;

/// A request the registry will not carry out, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Someone else holds a live lease on the task.
    #[error("task is already claimed by {holder}")]
    AlreadyClaimed {
        /// The current holder.
        holder: String,
    },
    /// The task cannot be claimed now (pending, blocked, final, backing off…).
    #[error("{0}")]
    NotReady(String),
    /// The caller's fence is stale: its lease is gone.
    #[error("{0}")]
    LeaseLost(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A value refers to something that does not fit (an unknown dependency, a cycle…).
    #[error(transparent)]
    Invalid(#[from] InputError),
}
