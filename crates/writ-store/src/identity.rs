//! Persistence for identity and the vault: users and groups, agents, API-key hashes, grants
//! with their budgets, and sealed credential versions. Both backends implement
//! [`IdentityStore`]; the rules (what a grant allows, how a secret is sealed) live in
//! `writ-identity` and `writ-vault`, and this module only keeps their rows.
//!
//! Two operations carry the invariants: [`IdentityStore::consume_grant`] spends a grant's budget
//! in one conditional `UPDATE`, so concurrent uses can never overspend, and it re-checks
//! revocation and expiry in the same statement, so a revocation takes effect at once.

use async_trait::async_trait;
use serde::Serialize;
use writ_core::Timestamp;
use writ_identity::{AgentId, Amount, Grant, GrantId, Usage, UserId};
use writ_vault::{CredentialName, CredentialRef, CredentialScope, SealedCredential, VersionState};

use crate::StoreError;

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub id: UserId,
    pub display_name: String,
    pub admin: bool,
    pub groups: Vec<String>,
    pub created_at: Timestamp,
}

/// A registered agent: owned by a user, authenticated by an API key or by client assertions
/// signed with the key whose public JWK is stored here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub owner: UserId,
    /// The agent's public key as a JWK (JSON text), if it authenticates with assertions.
    pub public_key: Option<String>,
    pub created_at: Timestamp,
    /// Since when the agent is disabled: its keys and tokens are refused.
    pub disabled_at: Option<Timestamp>,
    /// Counts the rotations of the agent's credentials (API keys revoked, public key replaced);
    /// a delegated token minted under an earlier generation is refused.
    pub key_generation: u64,
}

impl AgentRecord {
    /// A new, enabled agent of `owner`, at generation 0.
    pub fn new(id: AgentId, owner: UserId, public_key: Option<String>, now: Timestamp) -> Self {
        AgentRecord {
            id,
            owner,
            public_key,
            created_at: now,
            disabled_at: None,
            key_generation: 0,
        }
    }
}

/// Whose API key it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum KeySubject {
    User(UserId),
    Agent(AgentId),
}

impl KeySubject {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            KeySubject::User(u) => ("user", u.as_str()),
            KeySubject::Agent(a) => ("agent", a.as_str()),
        }
    }

    fn from_parts(kind: &str, id: String) -> Result<Self, StoreError> {
        let bad =
            |e: writ_identity::IdentityError| StoreError::Corrupt(format!("api key subject: {e}"));
        match kind {
            "user" => Ok(KeySubject::User(UserId::new(id).map_err(bad)?)),
            "agent" => Ok(KeySubject::Agent(AgentId::new(id).map_err(bad)?)),
            other => Err(StoreError::Corrupt(format!(
                "api key subject kind {other:?}"
            ))),
        }
    }
}

/// An API key as stored: its hash and public id, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub subject: KeySubject,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A grant and how much of it has been used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredGrant {
    pub grant: Grant,
    pub usage: Usage,
}

/// Which grants a listing wants.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub user: Option<UserId>,
    pub agent: Option<AgentId>,
}

/// One version of a credential, without its sealed bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialVersion {
    pub reference: CredentialRef,
    pub state: VersionState,
    pub master_key_id: String,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

/// A user's console password as stored: the Argon2id PHC string (never the password), when it
/// was set, and the failed sign-ins since the last success.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordRecord {
    pub phc: String,
    pub set_at: Timestamp,
    pub failures: u32,
    /// Sign-in with this password is refused until then, even with the right password.
    pub locked_until: Option<Timestamp>,
}

impl std::fmt::Debug for PasswordRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordRecord")
            .field("phc", &"redacted")
            .field("set_at", &self.set_at)
            .field("failures", &self.failures)
            .field("locked_until", &self.locked_until)
            .finish()
    }
}

/// Failed password sign-ins after one more was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordFailures {
    pub failures: u32,
    pub locked_until: Option<Timestamp>,
}

/// From this many consecutive failures on, each failure locks the password for
/// `2^(failures - LOCK_AFTER_FAILURES)` seconds, at most [`MAX_LOCK_SECS`].
pub const LOCK_AFTER_FAILURES: u32 = 5;
/// The longest lock a run of failures earns: 15 minutes.
pub const MAX_LOCK_SECS: i64 = 900;

/// Identity and vault rows. Both backends implement it.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Adds a user with its groups; fails with `AlreadyExists` if the id is taken.
    async fn add_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// Adds an agent; its owner must exist.
    async fn add_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    async fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError>;
    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Replaces the agent's public key (key rotation) and moves its key generation on, so that
    /// tokens minted with the old key are refused.
    async fn set_agent_public_key(&self, id: &AgentId, jwk: Option<&str>)
    -> Result<(), StoreError>;
    /// Disables the agent from `at` (`Some`) or enables it again (`None`). Fails with `NotFound`
    /// for an unknown agent.
    async fn set_agent_disabled(
        &self,
        id: &AgentId,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError>;

    /// Stores an API key's hash.
    async fn add_api_key(
        &self,
        key_hash: &[u8; 32],
        record: &ApiKeyRecord,
    ) -> Result<(), StoreError>;
    /// The unrevoked key with this hash.
    async fn api_key(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Revokes every live key of `subject`; returns how many. For an agent this also moves its
    /// key generation on (in the same transaction), so tokens minted with a revoked key die too.
    async fn revoke_api_keys(&self, subject: &KeySubject, at: Timestamp)
    -> Result<u64, StoreError>;

    async fn add_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    async fn grant(&self, id: &GrantId) -> Result<Option<StoredGrant>, StoreError>;
    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<StoredGrant>, StoreError>;
    /// Revokes a grant; returns false if it was already revoked.
    async fn revoke_grant(&self, id: &GrantId, at: Timestamp) -> Result<bool, StoreError>;
    /// Spends one use and `amount` of the sum budget, atomically and only if the grant is live
    /// and within both budgets at this instant. `None` means refused (nothing was spent).
    async fn consume_grant(
        &self,
        id: &GrantId,
        amount: Amount,
        now: Timestamp,
    ) -> Result<Option<Usage>, StoreError>;

    /// Stores `sealed` as the next version of its credential (its `reference.version` is
    /// ignored and replaced: the caller seals for [`IdentityStore::next_credential_version`]) and
    /// makes it current; the previous current version stays readable as `previous`.
    async fn put_credential(
        &self,
        sealed: &SealedCredential,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// The version number the next put of this credential will get.
    async fn next_credential_version(
        &self,
        name: &CredentialName,
        scope: &CredentialScope,
    ) -> Result<u32, StoreError>;
    /// Every version of every credential (or of one credential), without sealed bytes.
    async fn credential_versions(
        &self,
        name: Option<&CredentialName>,
    ) -> Result<Vec<CredentialVersion>, StoreError>;
    /// The sealed bytes of one live (not retired) version.
    async fn sealed_credential(
        &self,
        reference: &CredentialRef,
    ) -> Result<Option<SealedCredential>, StoreError>;
    /// Retires a `previous` version and destroys its sealed bytes.
    async fn retire_credential(
        &self,
        reference: &CredentialRef,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Records that `agent` used an assertion with `jti`, accepted until `expires_at`. Returns
    /// `false` if that `(agent, jti)` is already recorded and not yet expired (a replay). One
    /// insert against a unique key, so two presentations racing on any number of store
    /// instances cannot both get `true`. Rows expired at `now` are pruned first.
    async fn record_assertion_jti(
        &self,
        agent: &AgentId,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Sets (or replaces) `user`'s password hash, set at `now`, and clears failures and lock.
    /// `NotFound` if the user does not exist.
    async fn set_password(
        &self,
        user: &UserId,
        phc: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Removes `user`'s password; returns whether there was one.
    async fn clear_password(&self, user: &UserId) -> Result<bool, StoreError>;
    async fn password(&self, user: &UserId) -> Result<Option<PasswordRecord>, StoreError>;
    /// Counts one failed sign-in and, from the [`LOCK_AFTER_FAILURES`]th on, locks the password
    /// for `2^(failures - 5)` seconds from `now` (at most [`MAX_LOCK_SECS`]). One statement, so
    /// concurrent failures on any number of replicas are all counted. `None` if the user has no
    /// password.
    async fn record_password_failure(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Option<PasswordFailures>, StoreError>;
    /// Clears failures and lock after a successful sign-in.
    async fn reset_password_failures(&self, user: &UserId) -> Result<(), StoreError>;
}

pub(crate) fn password_failures(
    failures: i64,
    locked_until_us: Option<i64>,
) -> Result<PasswordFailures, StoreError> {
    Ok(PasswordFailures {
        failures: u32::try_from(failures)
            .map_err(|_| StoreError::Corrupt(format!("password failures {failures}")))?,
        locked_until: opt_ts(locked_until_us, "password lock")?,
    })
}

pub(crate) fn to_ts(us: i64, what: &str) -> Result<Timestamp, StoreError> {
    Timestamp::from_micros(us).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The error for a name that a principal of `kind` wanted and `holder` holds.
pub(crate) fn name_conflict(name: &str, kind: &str, holder: &str) -> StoreError {
    match holder {
        "user" if kind != "user" => StoreError::NameTaken {
            name: name.to_owned(),
            holder: "user",
        },
        "agent" if kind != "agent" => StoreError::NameTaken {
            name: name.to_owned(),
            holder: "agent",
        },
        _ => StoreError::AlreadyExists(format!("{kind} {name}")),
    }
}

pub(crate) fn opt_ts(us: Option<i64>, what: &str) -> Result<Option<Timestamp>, StoreError> {
    us.map(|u| to_ts(u, what)).transpose()
}

pub(crate) fn corrupt(what: &str) -> impl Fn(writ_identity::IdentityError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn vault_corrupt(what: &str) -> impl Fn(writ_vault::VaultError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn decode_grant(
    spec: &str,
    id: String,
    created_by: String,
    created_us: i64,
    revoked_us: Option<i64>,
    uses: i64,
    sum: i64,
) -> Result<StoredGrant, StoreError> {
    let spec = serde_json::from_str(spec)
        .map_err(|e| StoreError::Corrupt(format!("grant {id} spec: {e}")))?;
    Ok(StoredGrant {
        grant: Grant {
            id: GrantId::new(id).map_err(corrupt("grant id"))?,
            spec,
            created_by: UserId::new(created_by).map_err(corrupt("grant creator"))?,
            created_at: to_ts(created_us, "grant creation time")?,
            revoked_at: opt_ts(revoked_us, "grant revocation time")?,
        },
        usage: Usage {
            uses: u64::try_from(uses)
                .map_err(|_| StoreError::Corrupt("negative grant uses".into()))?,
            sum: Amount(sum),
        },
    })
}

pub(crate) fn encode_grant(grant: &Grant) -> Result<String, StoreError> {
    serde_json::to_string(&grant.spec)
        .map_err(|e| StoreError::InvalidRequest(format!("grant spec: {e}")))
}

pub(crate) fn version_row(
    name: String,
    owner: String,
    version: i64,
    state: String,
    master_key_id: String,
    created_us: i64,
    retired_us: Option<i64>,
) -> Result<CredentialVersion, StoreError> {
    Ok(CredentialVersion {
        reference: CredentialRef {
            name: CredentialName::new(name).map_err(vault_corrupt("credential name"))?,
            version: u32::try_from(version)
                .map_err(|_| StoreError::Corrupt(format!("credential version {version}")))?,
            scope: CredentialScope::from_owner_key(&owner)
                .map_err(vault_corrupt("credential owner"))?,
        },
        state: VersionState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("credential state {state:?}")))?,
        master_key_id,
        created_at: to_ts(created_us, "credential creation time")?,
        retired_at: opt_ts(retired_us, "credential retirement time")?,
    })
}

pub(crate) fn subject_from(kind: &str, id: String) -> Result<KeySubject, StoreError> {
    KeySubject::from_parts(kind, id)
}

pub(crate) fn subject_parts(s: &KeySubject) -> (&'static str, &str) {
    s.parts()
}

/// Opens the identity store of the database `database_url` names (or the embedded SQLite in
/// `data_dir`), migrating it as needed: the same database as [`crate::open`].
pub async fn open(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn IdentityStore>, StoreError> {
    let db: std::sync::Arc<dyn crate::Database> =
        crate::open_database(database_url, data_dir).await?;
    Ok(db)
}
