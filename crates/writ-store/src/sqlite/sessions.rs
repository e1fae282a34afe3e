//! [`SessionStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use writ_core::Timestamp;
use writ_identity::UserId;

use super::{SqliteStore, db, immediate, sql};
use crate::StoreError;
use crate::sessions::{
    ADD_PENDING_SIGN_IN, ADD_SESSION, LIVE_SESSION, PRUNE_PENDING_SIGN_INS, PRUNE_SESSIONS,
    REMOVE_SESSION, REMOVE_USER_SESSIONS, SessionRecord, SessionStore, TAKE_PENDING_SIGN_IN,
    encode, session_row, taken_pending,
};

#[async_trait]
impl SessionStore for SqliteStore {
    async fn add_session(
        &self,
        id_hash: &[u8; 32],
        session: &SessionRecord,
        max_per_user: u32,
    ) -> Result<(), StoreError> {
        let op = "add console session";
        let (hash, sign_in) = (id_hash.to_vec(), encode(session)?);
        let (user, created, expires) = (
            session.user.as_str().to_owned(),
            session.created_at.as_micros(),
            session.expires_at.as_micros(),
        );
        self.with_conn(op, move |c| {
            let tx = immediate(c).map_err(db(op))?;
            tx.execute(&sql(PRUNE_SESSIONS), params![created])
                .map_err(db(op))?;
            tx.execute(
                "DELETE FROM console_sessions WHERE id_hash IN (
                     SELECT id_hash FROM console_sessions WHERE user_id = ?1
                     ORDER BY created_us DESC LIMIT -1 OFFSET ?2)",
                params![user, max_per_user.saturating_sub(1)],
            )
            .map_err(db(op))?;
            tx.execute(
                &sql(ADD_SESSION),
                params![hash, user, sign_in, created, expires],
            )
            .map_err(db(op))?;
            tx.commit().map_err(db(op))
        })
        .await
    }

    async fn session(
        &self,
        id_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let op = "read console session";
        let hash = id_hash.to_vec();
        let row = self
            .with_conn(op, move |c| {
                c.query_row(&sql(LIVE_SESSION), params![hash, now.as_micros()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .optional()
                .map_err(db(op))
            })
            .await?;
        row.map(|(u, s, c, e)| session_row(u, &s, c, e)).transpose()
    }

    async fn remove_session(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let op = "remove console session";
        let hash = id_hash.to_vec();
        self.with_conn(op, move |c| {
            c.execute(&sql(REMOVE_SESSION), params![hash])
                .map(|n| n > 0)
                .map_err(db(op))
        })
        .await
    }

    async fn remove_user_sessions(&self, user: &UserId) -> Result<u64, StoreError> {
        let op = "remove a user's console sessions";
        let user = user.as_str().to_owned();
        self.with_conn(op, move |c| {
            c.execute(&sql(REMOVE_USER_SESSIONS), params![user])
                .map(|n| n as u64)
                .map_err(db(op))
        })
        .await
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
        let (hash, data) = (id_hash.to_vec(), data.to_string());
        self.with_conn(op, move |c| {
            let tx = immediate(c).map_err(db(op))?;
            tx.execute(&sql(PRUNE_PENDING_SIGN_INS), params![now.as_micros()])
                .map_err(db(op))?;
            tx.execute(
                "DELETE FROM console_pending_sign_ins WHERE id_hash IN (
                     SELECT id_hash FROM console_pending_sign_ins
                     ORDER BY expires_us DESC LIMIT -1 OFFSET ?1)",
                params![max_pending.saturating_sub(1)],
            )
            .map_err(db(op))?;
            tx.execute(
                &sql(ADD_PENDING_SIGN_IN),
                params![hash, data, expires_at.as_micros()],
            )
            .map_err(db(op))?;
            tx.commit().map_err(db(op))
        })
        .await
    }

    async fn take_pending_sign_in(
        &self,
        id_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<Value>, StoreError> {
        let op = "take pending sign-in";
        let hash = id_hash.to_vec();
        let data = self
            .with_conn(op, move |c| {
                c.query_row(&sql(TAKE_PENDING_SIGN_IN), params![hash], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
                .map_err(db(op))
            })
            .await?;
        match data {
            Some((data, expires_us)) => taken_pending(&data, expires_us, now),
            None => Ok(None),
        }
    }
}
