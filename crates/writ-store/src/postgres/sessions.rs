//! [`SessionStore`] on PostgreSQL.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Row;
use writ_core::Timestamp;
use writ_identity::UserId;

use super::{PgStore, db};
use crate::StoreError;
use crate::sessions::{
    ADD_PENDING_SIGN_IN, ADD_SESSION, LIVE_SESSION, PRUNE_PENDING_SIGN_INS, PRUNE_SESSIONS,
    REMOVE_SESSION, REMOVE_USER_SESSIONS, SessionRecord, SessionStore, TAKE_PENDING_SIGN_IN,
    encode, session_row, taken_pending,
};

#[async_trait]
impl SessionStore for PgStore {
    async fn add_session(
        &self,
        id_hash: &[u8; 32],
        session: &SessionRecord,
        max_per_user: u32,
    ) -> Result<(), StoreError> {
        let op = "add console session";
        let err = db(op);
        let mut tx = self.pool().begin().await.map_err(&err)?;
        sqlx::query(PRUNE_SESSIONS)
            .bind(session.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        sqlx::query(
            "DELETE FROM console_sessions WHERE id_hash IN (
                 SELECT id_hash FROM console_sessions WHERE user_id = $1
                 ORDER BY created_us DESC OFFSET $2)",
        )
        .bind(session.user.as_str())
        .bind(i64::from(max_per_user.saturating_sub(1)))
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        sqlx::query(ADD_SESSION)
            .bind(id_hash.as_slice())
            .bind(session.user.as_str())
            .bind(encode(session)?)
            .bind(session.created_at.as_micros())
            .bind(session.expires_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)
    }

    async fn session(
        &self,
        id_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let op = "read console session";
        let err = db(op);
        let row = sqlx::query(LIVE_SESSION)
            .bind(id_hash.as_slice())
            .bind(now.as_micros())
            .fetch_optional(self.pool())
            .await
            .map_err(&err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sign_in: String = row.try_get(1).map_err(&err)?;
        session_row(
            row.try_get(0).map_err(&err)?,
            &sign_in,
            row.try_get(2).map_err(&err)?,
            row.try_get(3).map_err(&err)?,
        )
        .map(Some)
    }

    async fn remove_session(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let done = sqlx::query(REMOVE_SESSION)
            .bind(id_hash.as_slice())
            .execute(self.pool())
            .await
            .map_err(db("remove console session"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_user_sessions(&self, user: &UserId) -> Result<u64, StoreError> {
        let done = sqlx::query(REMOVE_USER_SESSIONS)
            .bind(user.as_str())
            .execute(self.pool())
            .await
            .map_err(db("remove a user's console sessions"))?;
        Ok(done.rows_affected())
    }

    async fn add_pending_sign_in(
        &self,
        id_hash: &[u8; 32],
        data: &Value,
        expires_at: Timestamp,
        now: Timestamp,
        max_pending: u32,
    ) -> Result<(), StoreError> {
        let op = "add pending sign-in";
        let err = db(op);
        let mut tx = self.pool().begin().await.map_err(&err)?;
        sqlx::query(PRUNE_PENDING_SIGN_INS)
            .bind(now.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        sqlx::query(
            "DELETE FROM console_pending_sign_ins WHERE id_hash IN (
                 SELECT id_hash FROM console_pending_sign_ins ORDER BY expires_us DESC OFFSET $1)",
        )
        .bind(i64::from(max_pending.saturating_sub(1)))
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        sqlx::query(ADD_PENDING_SIGN_IN)
            .bind(id_hash.as_slice())
            .bind(data.to_string())
            .bind(expires_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)
    }

    async fn take_pending_sign_in(
        &self,
        id_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<Value>, StoreError> {
        let op = "take pending sign-in";
        let err = db(op);
        let row = sqlx::query(TAKE_PENDING_SIGN_IN)
            .bind(id_hash.as_slice())
            .fetch_optional(self.pool())
            .await
            .map_err(&err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let data: String = row.try_get(0).map_err(&err)?;
        taken_pending(&data, row.try_get(1).map_err(&err)?, now)
    }
}
