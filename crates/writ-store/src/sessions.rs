//! Console sessions, in the database: they survive a restart, every replica sees the same ones,
//! and signing out on one replica signs out on all. A session is keyed by the SHA-256 of its
//! cookie; the cookie itself is never stored, so a copy of the database opens no session.

use async_trait::async_trait;
use serde_json::Value;
use writ_core::Timestamp;
use writ_identity::UserId;

use crate::StoreError;
use crate::columns::{corrupt, from_json, to_json, to_ts};

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

/// The text a session's `sign_in` is stored as.
pub(crate) fn encode(session: &SessionRecord) -> Result<String, StoreError> {
    to_json(&session.sign_in, "session sign-in")
}

/// A session from its row (`user_id, sign_in, created_us, expires_us`).
pub(crate) fn session_row(
    user: String,
    sign_in: &str,
    created_us: i64,
    expires_us: i64,
) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        user: UserId::new(user).map_err(corrupt("session user"))?,
        sign_in: from_json(sign_in, "session sign-in")?,
        created_at: to_ts(created_us, "session creation time")?,
        expires_at: to_ts(expires_us, "session expiry")?,
    })
}

/// A pending sign-in taken from its row (`data, expires_us`): its data if it had not expired at
/// `now`. An expired one is gone all the same: taking it deleted it.
pub(crate) fn taken_pending(
    data: &str,
    expires_us: i64,
    now: Timestamp,
) -> Result<Option<Value>, StoreError> {
    if expires_us <= now.as_micros() {
        return Ok(None);
    }
    from_json(data, "pending sign-in").map(Some)
}

// The statements both backends run alike (PostgreSQL's `$N` parameters; SQLite runs them through
// `sqlite::sql`). Keeping only the newest sessions (`OFFSET`) is spelt differently.

pub(crate) const PRUNE_SESSIONS: &str = "DELETE FROM console_sessions WHERE expires_us <= $1";

pub(crate) const ADD_SESSION: &str =
    "INSERT INTO console_sessions (id_hash, user_id, sign_in, created_us, expires_us)
     VALUES ($1, $2, $3, $4, $5)";

/// The session with hash `$1` if it has not expired at `$2`.
pub(crate) const LIVE_SESSION: &str =
    "SELECT user_id, sign_in, created_us, expires_us FROM console_sessions
     WHERE id_hash = $1 AND expires_us > $2";

pub(crate) const REMOVE_SESSION: &str = "DELETE FROM console_sessions WHERE id_hash = $1";

pub(crate) const REMOVE_USER_SESSIONS: &str = "DELETE FROM console_sessions WHERE user_id = $1";

pub(crate) const PRUNE_PENDING_SIGN_INS: &str =
    "DELETE FROM console_pending_sign_ins WHERE expires_us <= $1";

pub(crate) const ADD_PENDING_SIGN_IN: &str =
    "INSERT INTO console_pending_sign_ins (id_hash, data, expires_us) VALUES ($1, $2, $3)";

/// Reads and deletes in one statement: two callbacks racing with one cookie cannot both get it.
pub(crate) const TAKE_PENDING_SIGN_IN: &str =
    "DELETE FROM console_pending_sign_ins WHERE id_hash = $1 RETURNING data, expires_us";
