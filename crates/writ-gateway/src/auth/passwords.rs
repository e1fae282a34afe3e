//! Console passwords over an [`IdentityStore`]: setting one and signing in with one. The rules
//! and the Argon2id hashing are `writ_identity::password`'s, the rows (the hash, the failure
//! count and the lock it earns, each counted in one atomic statement) are the store's; this
//! module decides what to refuse and runs every hash and verification on a blocking thread,
//! never on the async runtime's workers, at most as many at once as there are cores.
//!
//! Sign-in never tells an unknown user, a user without a password, a wrong password and a locked
//! password apart in what it costs: each spends one Argon2id verification, real or
//! [`password::verify_dummy`]. Callers show one message for all refusals.

use std::sync::LazyLock;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use writ_core::Timestamp;
use writ_identity::UserId;
use writ_identity::password::{self, Password, PasswordError};

use writ_store::StoreError;
use writ_store::identity::{IdentityStore, PasswordFailures, UserRecord};

/// Why a password could not be set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordChangeError {
    /// The new password breaks a rule (length, equal to the user id).
    #[error("{0}")]
    Invalid(PasswordError),
    #[error(
        "user {0} already has a password: give the current one (current_password) to change it, or ask an admin to clear it"
    )]
    CurrentRequired(UserId),
    #[error("the current password is wrong")]
    CurrentWrong,
    #[error(
        "too many wrong passwords: the password is locked until {0}; try again then, or ask an admin to clear it"
    )]
    Locked(Timestamp),
    #[error("{0}")]
    Hashing(PasswordError),
    #[error("too many password checks at this moment; nothing was changed; retry in a few seconds")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The password was set, but its `password.set` entry could not be recorded.
    #[error(transparent)]
    Record(crate::Error),
}

/// Who sets the password, and so whether the current one must be given.
pub enum Authority {
    /// The user themselves: if they have a password, `current` must match it. A wrong one counts
    /// as a failed sign-in.
    User { current: Option<Password> },
    /// An operator on the server's host (`writ users set-password`): no current password.
    Operator,
}

/// Argon2id work at once. Each hash or verification holds 19 MiB and a core for tens of
/// milliseconds; more at once than there are cores only queues on the blocking pool (which also
/// runs the SQLite calls) and spends memory, so a flood of sign-ins could starve the gateway.
static ARGON2: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
});
/// How long a sign-in or a change waits for its turn before it is turned away.
const ARGON2_WAIT: Duration = Duration::from_secs(2);

/// A turn at Argon2id work, or `None` when none came within [`ARGON2_WAIT`]. A sign-in takes its
/// turn before it reads the password's row and holds it until its failure is counted, so that
/// guesses sent in parallel are checked against the lock a few at a time, not all at once.
async fn turn() -> Option<SemaphorePermit<'static>> {
    tokio::time::timeout(ARGON2_WAIT, ARGON2.acquire())
        .await
        .ok()
        .and_then(Result::ok)
}

/// A blocking thread that panicked or was cancelled, reported as the store reports its own.
fn thread_lost(op: &'static str, e: tokio::task::JoinError) -> StoreError {
    StoreError::Database {
        op,
        message: e.to_string(),
    }
}

/// Hashes on a blocking thread.
async fn hash(new: &Password) -> Result<String, PasswordChangeError> {
    let new = new.clone();
    tokio::task::spawn_blocking(move || password::hash(&new))
        .await
        .map_err(|e| thread_lost("hash password", e))?
        .map_err(PasswordChangeError::Hashing)
}

/// Verifies on a blocking thread; `None` spends the same time and fails.
async fn verify(phc: Option<String>, candidate: &Password) -> Result<bool, StoreError> {
    let candidate = candidate.clone();
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => password::verify(&phc, &candidate),
        None => {
            password::verify_dummy(&candidate);
            Ok(false)
        }
    })
    .await
    .map_err(|e| thread_lost("verify password", e))?
    .or_else(|e| {
        // Fail closed, and say so in the log: a stored hash that cannot be read never matches.
        tracing::error!(error = %e, "a stored password hash could not be verified");
        Ok(false)
    })
}

/// Sets `user`'s password to `new` after checking the rules (and, for the user themselves, the
/// current password). Returns the instant it was set: sessions opened with an older password end.
pub async fn change(
    store: &dyn IdentityStore,
    user: &UserId,
    new: &Password,
    authority: Authority,
    now: Timestamp,
) -> Result<Timestamp, PasswordChangeError> {
    password::check_new(user, new).map_err(PasswordChangeError::Invalid)?;
    let _turn = turn().await.ok_or(PasswordChangeError::Busy)?;
    if store.user(user).await?.is_none() {
        return Err(StoreError::NotFound(format!("user {user}")).into());
    }
    if let Authority::User { current } = authority
        && let Some(existing) = store.password(user).await?
    {
        let current = current.ok_or_else(|| PasswordChangeError::CurrentRequired(user.clone()))?;
        if let Some(until) = existing.locked_until.filter(|u| *u > now) {
            verify(None, &current).await?;
            store.record_password_failure(user, now).await?;
            return Err(PasswordChangeError::Locked(until));
        }
        if !verify(Some(existing.phc), &current).await? {
            let failed = store.record_password_failure(user, now).await?;
            return Err(
                match failed.and_then(|f| f.locked_until).filter(|u| *u > now) {
                    Some(until) => PasswordChangeError::Locked(until),
                    None => PasswordChangeError::CurrentWrong,
                },
            );
        }
    }
    let phc = hash(new).await?;
    store.set_password(user, &phc, now).await?;
    Ok(now)
}

/// What a password sign-in came to.
#[derive(Debug)]
pub enum SignIn {
    /// The password is `user`'s, set at `set_at` (the session remembers it).
    Accepted { user: UserRecord, set_at: Timestamp },
    /// Unknown user, no password, or a wrong one: the caller cannot tell which, and must not.
    Refused,
    /// Not checked: too many password checks at this moment (nothing was counted). The caller
    /// asks to retry shortly; it says nothing about the user.
    Busy,
    /// Refused because the password is locked, before this attempt or by it. The caller shows
    /// the same message as for [`SignIn::Refused`] and may log the lock.
    Locked {
        user: UserId,
        failures: u32,
        until: Timestamp,
    },
}

/// Checks `password` for the user `user_id` names and counts the result: a failure towards the
/// lock, a success clears the count.
pub async fn sign_in(
    store: &dyn IdentityStore,
    user_id: &str,
    candidate: &Password,
    now: Timestamp,
) -> Result<SignIn, StoreError> {
    let Some(_turn) = turn().await else {
        return Ok(SignIn::Busy);
    };
    let Ok(user) = UserId::new(user_id.trim()) else {
        verify(None, candidate).await?;
        return Ok(SignIn::Refused);
    };
    let Some(record) = store.password(&user).await? else {
        verify(None, candidate).await?;
        return Ok(SignIn::Refused);
    };
    let locked = |failed: Option<PasswordFailures>| match failed {
        Some(f) => match f.locked_until.filter(|u| *u > now) {
            Some(until) => SignIn::Locked {
                user: user.clone(),
                failures: f.failures,
                until,
            },
            None => SignIn::Refused,
        },
        None => SignIn::Refused,
    };
    if record.locked_until.is_some_and(|u| u > now) {
        // Locked: the password is not even tried, and the attempt extends the lock.
        verify(None, candidate).await?;
        let failed = store.record_password_failure(&user, now).await?;
        return Ok(locked(failed));
    }
    if !verify(Some(record.phc), candidate).await? {
        let failed = store.record_password_failure(&user, now).await?;
        return Ok(locked(failed));
    }
    let Some(found) = store.user(&user).await? else {
        return Ok(SignIn::Refused);
    };
    if record.failures > 0 || record.locked_until.is_some() {
        store.reset_password_failures(&user).await?;
    }
    Ok(SignIn::Accepted {
        user: found,
        set_at: record.set_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// With every turn taken, a sign-in is turned away without reading or counting anything.
    #[tokio::test]
    async fn sign_ins_beyond_the_cores_wait_then_are_turned_away() {
        let dir = tempfile::tempdir().unwrap();
        let store = writ_store::sqlite::SqliteStore::open(&dir.path().join("writ.db"))
            .await
            .unwrap();
        let all = u32::try_from(ARGON2.available_permits()).unwrap();
        let held = ARGON2.acquire_many(all).await.unwrap();
        let candidate = Password::new("correct horse battery".to_owned());
        let answer = sign_in(&store, "alice", &candidate, Timestamp::now())
            .await
            .unwrap();
        assert!(matches!(answer, SignIn::Busy), "{answer:?}");
        let changed = change(
            &store,
            &UserId::new("alice").unwrap(),
            &candidate,
            Authority::Operator,
            Timestamp::now(),
        )
        .await;
        assert!(
            matches!(changed, Err(PasswordChangeError::Busy)),
            "{changed:?}"
        );
        drop(held);
        let answer = sign_in(&store, "alice", &candidate, Timestamp::now())
            .await
            .unwrap();
        assert!(matches!(answer, SignIn::Refused), "{answer:?}");
    }
}
