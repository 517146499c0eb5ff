//! Dashboard sessions and one-time login codes on PostgreSQL, shared by every server on the
//! database. Starting a session takes one transaction-scoped advisory lock, so logins on several
//! servers at once make room in turn and the limits hold exactly; a login code is spent by one
//! `DELETE … RETURNING`, so it works once whichever servers try it at the same moment. Expiry is
//! judged by the database's clock.

use std::time::Duration;

use sqlx::Row;

use crate::domain::Timestamp;
use crate::store::sessions::{digest_from_text, digest_text, room_for_one, ttl_millis};
use crate::store::{DashboardSession, DashboardSessions, NewSession, SessionLimits, StoreResult};

use super::Postgres;

/// The advisory lock key a change starting a session holds until it commits.
const SESSION_START_LOCK: i64 = 0x7479_7365_7373; // "tysess"

#[async_trait::async_trait]
impl DashboardSessions for Postgres {
    async fn start_session(
        &self,
        key: [u8; 32],
        session: NewSession,
        limits: SessionLimits,
    ) -> StoreResult<usize> {
        let mut tx = self.begin().await?;
        let now = tx.now.millis();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SESSION_START_LOCK)
            .execute(tx.db())
            .await?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(tx.db())
            .await?;
        let for_owner = sqlx::query(
            "DELETE FROM dashboard_sessions WHERE id IN (SELECT id FROM dashboard_sessions \
             WHERE owner = $1 ORDER BY id DESC OFFSET $2)",
        )
        .bind(&session.owner)
        .bind(room_for_one(limits.per_owner))
        .execute(tx.db())
        .await?
        .rows_affected();
        let for_all = sqlx::query(
            "DELETE FROM dashboard_sessions WHERE id IN (SELECT id FROM dashboard_sessions \
             ORDER BY id DESC OFFSET $1)",
        )
        .bind(room_for_one(limits.total))
        .execute(tx.db())
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO dashboard_sessions (key, token_hash, csrf, owner, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest_text(&key))
        .bind(digest_text(&session.token_hash))
        .bind(&session.csrf)
        .bind(&session.owner)
        .bind(tx.now.plus_millis(ttl_millis(session.ttl)).millis())
        .execute(tx.db())
        .await?;
        let ended = usize::try_from(for_owner + for_all).unwrap_or(usize::MAX);
        self.commit(tx, ended).await
    }

    async fn session(&self, key: [u8; 32]) -> StoreResult<Option<DashboardSession>> {
        let row = sqlx::query(
            "SELECT token_hash, csrf, owner, expires_at FROM dashboard_sessions \
             WHERE key = $1 AND expires_at > taskyard_now_ms()",
        )
        .bind(digest_text(&key))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DashboardSession {
                token_hash: digest_from_text(row.try_get(0)?)?,
                csrf: row.try_get(1)?,
                owner: row.try_get(2)?,
                expires_at: Timestamp(row.try_get(3)?),
            })
        })
        .transpose()
    }

    async fn end_session(&self, key: [u8; 32]) -> StoreResult<bool> {
        let ended = sqlx::query("DELETE FROM dashboard_sessions WHERE key = $1")
            .bind(digest_text(&key))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(ended > 0)
    }

    async fn add_login_code(
        &self,
        code_hash: [u8; 32],
        token_hash: [u8; 32],
        ttl: Duration,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM login_codes WHERE expires_at <= $1")
            .bind(tx.now.millis())
            .execute(tx.db())
            .await?;
        sqlx::query("INSERT INTO login_codes (code_hash, token_hash, expires_at) VALUES ($1, $2, $3)")
            .bind(digest_text(&code_hash))
            .bind(digest_text(&token_hash))
            .bind(tx.now.plus_millis(ttl_millis(ttl)).millis())
            .execute(tx.db())
            .await?;
        self.commit(tx, ()).await
    }

    async fn redeem_login_code(&self, code_hash: [u8; 32]) -> StoreResult<Option<[u8; 32]>> {
        let spent: Option<String> = sqlx::query_scalar(
            "DELETE FROM login_codes WHERE code_hash = $1 RETURNING \
             CASE WHEN expires_at > taskyard_now_ms() THEN token_hash END",
        )
        .bind(digest_text(&code_hash))
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        spent.as_deref().map(digest_from_text).transpose()
    }
}
