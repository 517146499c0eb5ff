//! Dashboard sessions and one-time login codes on SQLite: starting, ending and spending them are
//! changes on the writer; looking a session up is a read.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use crate::domain::Timestamp;
use crate::store::sessions::{digest_from_text, digest_text, room_for_one, ttl_millis};
use crate::store::{DashboardSession, DashboardSessions, NewSession, SessionLimits, StoreResult};

use super::Sqlite;

#[async_trait::async_trait]
impl DashboardSessions for Sqlite {
    async fn start_session(
        &self,
        key: [u8; 32],
        session: NewSession,
        limits: SessionLimits,
    ) -> StoreResult<usize> {
        self.write(move |tx| {
            let now = tx.now.millis();
            tx.prepare_cached("DELETE FROM dashboard_sessions WHERE expires_at <= ?1")?
                .execute([now])?;
            let mut ended = tx
                .prepare_cached(
                    "DELETE FROM dashboard_sessions WHERE id IN (SELECT id FROM dashboard_sessions \
                     WHERE owner = ?1 ORDER BY id DESC LIMIT -1 OFFSET ?2)",
                )?
                .execute(params![session.owner, room_for_one(limits.per_owner)])?;
            ended += tx
                .prepare_cached(
                    "DELETE FROM dashboard_sessions WHERE id IN (SELECT id FROM dashboard_sessions \
                     ORDER BY id DESC LIMIT -1 OFFSET ?1)",
                )?
                .execute([room_for_one(limits.total)])?;
            tx.prepare_cached(
                "INSERT INTO dashboard_sessions (key, token_hash, csrf, owner, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                digest_text(&key),
                digest_text(&session.token_hash),
                session.csrf,
                session.owner,
                tx.now.plus_millis(ttl_millis(session.ttl)).millis()
            ])?;
            Ok(ended)
        })
        .await
    }

    async fn session(&self, key: [u8; 32]) -> StoreResult<Option<DashboardSession>> {
        let now = Timestamp::now().millis();
        self.read(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT token_hash, csrf, owner, expires_at FROM dashboard_sessions \
                     WHERE key = ?1 AND expires_at > ?2",
                )?
                .query_row(params![digest_text(&key), now], |row| {
                    Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()?;
            found
                .map(|(token_hash, csrf, owner, expires_at)| {
                    Ok(DashboardSession {
                        token_hash: digest_from_text(&token_hash)?,
                        csrf,
                        owner,
                        expires_at: Timestamp(expires_at),
                    })
                })
                .transpose()
        })
        .await
    }

    async fn end_session(&self, key: [u8; 32]) -> StoreResult<bool> {
        self.write(move |tx| {
            let ended = tx
                .prepare_cached("DELETE FROM dashboard_sessions WHERE key = ?1")?
                .execute([digest_text(&key)])?;
            Ok(ended > 0)
        })
        .await
    }

    async fn add_login_code(
        &self,
        code_hash: [u8; 32],
        token_hash: [u8; 32],
        ttl: Duration,
    ) -> StoreResult<()> {
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM login_codes WHERE expires_at <= ?1")?
                .execute([tx.now.millis()])?;
            tx.prepare_cached(
                "INSERT INTO login_codes (code_hash, token_hash, expires_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                digest_text(&code_hash),
                digest_text(&token_hash),
                tx.now.plus_millis(ttl_millis(ttl)).millis()
            ])?;
            Ok(())
        })
        .await
    }

    async fn redeem_login_code(&self, code_hash: [u8; 32]) -> StoreResult<Option<[u8; 32]>> {
        self.write(move |tx| {
            let spent = tx
                .prepare_cached(
                    "DELETE FROM login_codes WHERE code_hash = ?1 RETURNING token_hash, expires_at",
                )?
                .query_row([digest_text(&code_hash)], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .optional()?;
            match spent {
                Some((token_hash, expires_at)) if expires_at > tx.now.millis() => {
                    Ok(Some(digest_from_text(&token_hash)?))
                }
                _ => Ok(None),
            }
        })
        .await
    }
}
