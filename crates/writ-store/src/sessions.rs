//! Console sessions, in the database: they survive a restart, every replica sees the same ones,
//! and signing out on one replica signs out on all. A session is keyed by the SHA-256 of its
//! cookie; the cookie itself is never stored, so a copy of the database opens no session.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use sqlx::Row;
use writ_core::Timestamp;
use writ_identity::UserId;

use crate::StoreError;
use crate::identity::{corrupt, to_ts};
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;

/// One console session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub user: UserId,
    /// How the session was opened, as the console describes it (it re-checks this on every
    /// request: a revoked key or a changed password ends the session).
    pub sign_in: Value,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Console sessions. Both backends implement it.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session. Expired sessions are pruned first, and the user's most recently
    /// opened `max_per_user - 1` are kept (older ones end), so that no user holds more than
    /// `max_per_user` (two sign-ins of one user racing on PostgreSQL may leave one more).
    async fn add_session(
        &self,
        id_hash: &[u8; 32],
        session: &SessionRecord,
        max_per_user: u32,
    ) -> Result<(), StoreError>;
    /// The session with this hash, if it has not expired at `now`.
    async fn session(
        &self,
        id_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Ends a session; `false` if there was none.
    async fn remove_session(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError>;
    /// Ends every session of `user`; returns how many.
    async fn remove_user_sessions(&self, user: &UserId) -> Result<u64, StoreError>;

    /// Stores a sign-in started with an identity provider, until `expires_at`. Expired ones are
    /// pruned first; beyond `max_pending` the oldest are dropped (a flood of started sign-ins
    /// cannot fill the database).
    async fn add_pending_sign_in(
        &self,
        id_hash: &[u8; 32],
        data: &Value,
        expires_at: Timestamp,
        now: Timestamp,
        max_pending: u32,
    ) -> Result<(), StoreError>;
    /// Takes (reads and deletes, in one statement) a pending sign-in that has not expired at
    /// `now`: two callbacks racing with one cookie cannot both get it.
    async fn take_pending_sign_in(
        &self,
        id_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<Value>, StoreError>;
}

fn pending_data(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("pending sign-in: {e}")))
}

fn encode(session: &SessionRecord) -> Result<String, StoreError> {
    serde_json::to_string(&session.sign_in)
        .map_err(|e| StoreError::InvalidRequest(format!("session sign-in: {e}")))
}

fn decode(
    user: String,
    sign_in: &str,
    created_us: i64,
    expires_us: i64,
) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        user: UserId::new(user).map_err(corrupt("session user"))?,
        sign_in: serde_json::from_str(sign_in)
            .map_err(|e| StoreError::Corrupt(format!("session sign-in: {e}")))?,
        created_at: to_ts(created_us, "session creation time")?,
        expires_at: to_ts(expires_us, "session expiry")?,
    })
}

fn sqlite_err(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::db(op, e)
}

fn pg_err(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::db(op, e)
}

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
        self.read(op, move |c| {
            let db = sqlite_err(op);
            let tx =
                rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)
                    .map_err(&db)?;
            tx.execute(
                "DELETE FROM console_sessions WHERE expires_us <= ?1",
                params![created],
            )
            .map_err(&db)?;
            tx.execute(
                "DELETE FROM console_sessions WHERE id_hash IN (
                     SELECT id_hash FROM console_sessions WHERE user_id = ?1
                     ORDER BY created_us DESC LIMIT -1 OFFSET ?2)",
                params![user, max_per_user.saturating_sub(1)],
            )
            .map_err(&db)?;
            tx.execute(
                "INSERT INTO console_sessions (id_hash, user_id, sign_in, created_us, expires_us)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, user, sign_in, created, expires],
            )
            .map_err(&db)?;
            tx.commit().map_err(&db)
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
            .read(op, move |c| {
                c.query_row(
                    "SELECT user_id, sign_in, created_us, expires_us FROM console_sessions
                     WHERE id_hash = ?1 AND expires_us > ?2",
                    params![hash, now.as_micros()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()
                .map_err(sqlite_err(op))
            })
            .await?;
        row.map(|(u, s, c, e)| decode(u, &s, c, e)).transpose()
    }

    async fn remove_session(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let op = "remove console session";
        let hash = id_hash.to_vec();
        self.read(op, move |c| {
            c.execute(
                "DELETE FROM console_sessions WHERE id_hash = ?1",
                params![hash],
            )
            .map(|n| n > 0)
            .map_err(sqlite_err(op))
        })
        .await
    }

    async fn remove_user_sessions(&self, user: &UserId) -> Result<u64, StoreError> {
        let op = "remove a user's console sessions";
        let user = user.as_str().to_owned();
        self.read(op, move |c| {
            c.execute(
                "DELETE FROM console_sessions WHERE user_id = ?1",
                params![user],
            )
            .map(|n| n as u64)
            .map_err(sqlite_err(op))
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
        self.read(op, move |c| {
            let db = sqlite_err(op);
            let tx = rusqlite::Transaction::new_unchecked(
                c,
                rusqlite::TransactionBehavior::Immediate,
            )
            .map_err(&db)?;
            tx.execute(
                "DELETE FROM console_pending_sign_ins WHERE expires_us <= ?1",
                params![now.as_micros()],
            )
            .map_err(&db)?;
            tx.execute(
                "DELETE FROM console_pending_sign_ins WHERE id_hash IN (
                     SELECT id_hash FROM console_pending_sign_ins
                     ORDER BY expires_us DESC LIMIT -1 OFFSET ?1)",
                params![max_pending.saturating_sub(1)],
            )
            .map_err(&db)?;
            tx.execute(
                "INSERT INTO console_pending_sign_ins (id_hash, data, expires_us) VALUES (?1, ?2, ?3)",
                params![hash, data, expires_at.as_micros()],
            )
            .map_err(&db)?;
            tx.commit().map_err(&db)
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
            .read(op, move |c| {
                c.query_row(
                    "DELETE FROM console_pending_sign_ins WHERE id_hash = ?1
                     RETURNING data, expires_us",
                    params![hash],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(sqlite_err(op))
            })
            .await?;
        data.filter(|(_, expires)| *expires > now.as_micros())
            .map(|(d, _)| pending_data(&d))
            .transpose()
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn add_session(
        &self,
        id_hash: &[u8; 32],
        session: &SessionRecord,
        max_per_user: u32,
    ) -> Result<(), StoreError> {
        let op = "add console session";
        let db = pg_err(op);
        let mut tx = self.pool().begin().await.map_err(&db)?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_us <= $1")
            .bind(session.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(&db)?;
        sqlx::query(
            "DELETE FROM console_sessions WHERE id_hash IN (
                 SELECT id_hash FROM console_sessions WHERE user_id = $1
                 ORDER BY created_us DESC OFFSET $2)",
        )
        .bind(session.user.as_str())
        .bind(i64::from(max_per_user.saturating_sub(1)))
        .execute(&mut *tx)
        .await
        .map_err(&db)?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, user_id, sign_in, created_us, expires_us)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash.as_slice())
        .bind(session.user.as_str())
        .bind(encode(session)?)
        .bind(session.created_at.as_micros())
        .bind(session.expires_at.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(&db)?;
        tx.commit().await.map_err(&db)
    }

    async fn session(
        &self,
        id_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let op = "read console session";
        let db = pg_err(op);
        let row = sqlx::query(
            "SELECT user_id, sign_in, created_us, expires_us FROM console_sessions
             WHERE id_hash = $1 AND expires_us > $2",
        )
        .bind(id_hash.as_slice())
        .bind(now.as_micros())
        .fetch_optional(self.pool())
        .await
        .map_err(&db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sign_in: String = row.try_get(1).map_err(&db)?;
        decode(
            row.try_get(0).map_err(&db)?,
            &sign_in,
            row.try_get(2).map_err(&db)?,
            row.try_get(3).map_err(&db)?,
        )
        .map(Some)
    }

    async fn remove_session(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash.as_slice())
            .execute(self.pool())
            .await
            .map_err(pg_err("remove console session"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_user_sessions(&self, user: &UserId) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
            .bind(user.as_str())
            .execute(self.pool())
            .await
            .map_err(pg_err("remove a user's console sessions"))?;
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
        let db = pg_err(op);
        let mut tx = self.pool().begin().await.map_err(&db)?;
        sqlx::query("DELETE FROM console_pending_sign_ins WHERE expires_us <= $1")
            .bind(now.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(&db)?;
        sqlx::query(
            "DELETE FROM console_pending_sign_ins WHERE id_hash IN (
                 SELECT id_hash FROM console_pending_sign_ins ORDER BY expires_us DESC OFFSET $1)",
        )
        .bind(i64::from(max_pending.saturating_sub(1)))
        .execute(&mut *tx)
        .await
        .map_err(&db)?;
        sqlx::query(
            "INSERT INTO console_pending_sign_ins (id_hash, data, expires_us) VALUES ($1, $2, $3)",
        )
        .bind(id_hash.as_slice())
        .bind(data.to_string())
        .bind(expires_at.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(&db)?;
        tx.commit().await.map_err(&db)
    }

    async fn take_pending_sign_in(
        &self,
        id_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<Value>, StoreError> {
        let op = "take pending sign-in";
        let db = pg_err(op);
        let row = sqlx::query(
            "DELETE FROM console_pending_sign_ins WHERE id_hash = $1 RETURNING data, expires_us",
        )
        .bind(id_hash.as_slice())
        .fetch_optional(self.pool())
        .await
        .map_err(&db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires: i64 = row.try_get(1).map_err(&db)?;
        if expires <= now.as_micros() {
            return Ok(None);
        }
        let data: String = row.try_get(0).map_err(&db)?;
        pending_data(&data).map(Some)
    }
}
