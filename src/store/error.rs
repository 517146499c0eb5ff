//! What a store operation can fail with, in terms that do not depend on the database behind it:
//! a refusal (the registry's answer), or a fault of the database itself.

use crate::domain::{InputError, Refused};

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The registry refuses it (not found, already claimed, lease lost…); nothing changed.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The disk (or quota) under the database is full; nothing changed.
    #[error("the database's storage is full: {0}")]
    StorageFull(String),
    /// The database cannot be reached right now (it is restarting, say); nothing changed.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database failed otherwise.
    #[error("database error: {0}")]
    Database(String),
    /// Stored data could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// True for a refusal: the request was judged and declined, the database is fine.
    pub fn is_refusal(&self) -> bool {
        matches!(self, StoreError::Refused(_))
    }

    /// True when the database could not be written because its disk is full.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, StoreError::StorageFull(_))
    }

    /// A refusal: `what` was not found.
    pub fn not_found(what: impl Into<String>) -> Self {
        Refused::NotFound(what.into()).into()
    }

    /// A refusal: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Refused::Conflict(message.into()).into()
    }

    /// A refusal: the caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Refused::Forbidden(message.into()).into()
    }
}

impl From<InputError> for StoreError {
    fn from(err: InputError) -> Self {
        Refused::Invalid(err).into()
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;
