//! Dashboard sessions and one-time login codes, kept in the registry so that every server sharing
//! it knows them: a cookie obtained from one server works on another, and a login code works
//! once, wherever it is redeemed. Only digests are stored: a session under the SHA-256 of its
//! cookie value, a code under the SHA-256 of the code. Cookies, CSRF checks and the end-of-session
//! signal are HTTP's business (`http::session`).

use std::time::Duration;

use crate::domain::Timestamp;

use super::{StoreError, StoreResult};

/// A live dashboard session as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSession {
    /// SHA-256 of the token used to log in: the session acts as that token, so revoking the
    /// token ends the session.
    pub token_hash: [u8; 32],
    /// Sent back by the page on every mutation.
    pub csrf: String,
    /// The name of the principal it acts as.
    pub owner: String,
    /// When it ends, on the registry's clock.
    pub expires_at: Timestamp,
}

/// A session about to start.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the token it acts as.
    pub token_hash: [u8; 32],
    /// Its CSRF token.
    pub csrf: String,
    /// The name of the principal it acts as.
    pub owner: String,
    /// How long it lasts from now, on the registry's clock.
    pub ttl: Duration,
}

/// How many sessions may live at once.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Most sessions one owner may have: its oldest make room for a new one.
    pub per_owner: usize,
    /// Most sessions in all: the oldest make room for a new one.
    pub total: usize,
}

/// Dashboard sessions and one-time login codes.
#[async_trait::async_trait]
pub trait DashboardSessions: Send + Sync {
    /// Starts `session` under `key` (the SHA-256 of its cookie value). Expired sessions are
    /// pruned first; then the owner's oldest, and the oldest of all, make room within `limits`.
    /// Returns how many live sessions were ended to make room.
    async fn start_session(
        &self,
        key: [u8; 32],
        session: NewSession,
        limits: SessionLimits,
    ) -> StoreResult<usize>;

    /// The live (unexpired) session kept under `key`.
    async fn session(&self, key: [u8; 32]) -> StoreResult<Option<DashboardSession>>;

    /// Ends the session kept under `key`; true when there was one.
    async fn end_session(&self, key: [u8; 32]) -> StoreResult<bool>;

    /// Stores a one-time login code by its SHA-256, acting as the token with hash `token_hash`,
    /// valid for `ttl` from now. Expired codes are pruned.
    async fn add_login_code(
        &self,
        code_hash: [u8; 32],
        token_hash: [u8; 32],
        ttl: Duration,
    ) -> StoreResult<()>;

    /// Spends the login code with SHA-256 `code_hash` in one statement, so it works once across
    /// every server: the token hash it acts as, unless it was spent, never issued or expired.
    async fn redeem_login_code(&self, code_hash: [u8; 32]) -> StoreResult<Option<[u8; 32]>>;
}

/// A digest as stored: lowercase hex, like the agents' token hashes.
pub(super) fn digest_text(digest: &[u8; 32]) -> String {
    hex::encode(digest)
}

/// A digest read back from its hex text.
pub(super) fn digest_from_text(text: &str) -> StoreResult<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{text:?} is not a SHA-256 digest")))
}

/// `ttl` in milliseconds, as added to the registry's clock.
pub(super) fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// How many of an owner's (or of all) sessions may stay when a new one starts: `limit - 1`,
/// leaving room for it.
pub(super) fn room_for_one(limit: usize) -> i64 {
    i64::try_from(limit.max(1) - 1).unwrap_or(i64::MAX)
}
