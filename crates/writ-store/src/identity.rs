//! Persistence for identity and the vault: users and groups, agents, API-key hashes, grants
//! with their budgets, and sealed credential versions. Both backends implement
//! [`IdentityStore`]; the rules (what a grant allows, how a secret is sealed) live in
//! `writ-identity` and `writ-vault`, and this module only keeps their rows.
//!
//! Two operations carry the invariants: [`IdentityStore::consume_grant`] spends a grant's budget
//! in one conditional `UPDATE`, so concurrent uses can never overspend, and it re-checks
//! revocation and expiry in the same statement, so a revocation takes effect at once;
//! [`IdentityStore::record_password_failure`] counts a failure and the lock it earns in one
//! `UPDATE … RETURNING`, so concurrent failures on any number of replicas are all counted. What
//! to make of them (the grant check, refusing a sign-in) is `writ_gateway::auth`'s.
//!
//! Below the trait: the row decoding both backends share, then the statements they run alike.

use async_trait::async_trait;
use serde::Serialize;
use writ_core::Timestamp;
use writ_identity::{AgentId, Amount, Grant, GrantId, Usage, UserId};
use writ_vault::{CredentialName, CredentialRef, CredentialScope, SealedCredential, VersionState};

use crate::StoreError;
use crate::columns::{corrupt, from_json, opt_ts, to_json, to_ts, vault_corrupt};

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

/// A user from its row (`id, display_name, is_admin, created_us`) and its groups.
pub(crate) fn user_row(
    id: String,
    display_name: String,
    admin: bool,
    created_us: i64,
    groups: Vec<String>,
) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: UserId::new(id).map_err(corrupt("user id"))?,
        display_name,
        admin,
        groups,
        created_at: to_ts(created_us, "user creation time")?,
    })
}

/// The columns of an agent, in the order `agent_columns!` lists them.
pub(crate) struct RawAgent {
    pub id: String,
    pub owner: String,
    pub public_key: Option<String>,
    pub created_us: i64,
    pub disabled_us: Option<i64>,
    pub key_generation: i64,
}

impl RawAgent {
    pub fn decode(self) -> Result<AgentRecord, StoreError> {
        Ok(AgentRecord {
            id: AgentId::new(self.id).map_err(corrupt("agent id"))?,
            owner: UserId::new(self.owner).map_err(corrupt("agent owner"))?,
            public_key: self.public_key,
            created_at: to_ts(self.created_us, "agent creation time")?,
            disabled_at: opt_ts(self.disabled_us, "agent disabling time")?,
            key_generation: u64::try_from(self.key_generation)
                .map_err(|_| StoreError::Corrupt("agent key generation is negative".into()))?,
        })
    }
}

/// An API key from its row (`key_id, subject_kind, subject_id, created_us, revoked_us`).
pub(crate) fn api_key_row(
    key_id: String,
    kind: &str,
    id: String,
    created_us: i64,
    revoked_us: Option<i64>,
) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        key_id,
        subject: KeySubject::from_parts(kind, id)?,
        created_at: to_ts(created_us, "api key creation time")?,
        revoked_at: opt_ts(revoked_us, "api key revocation time")?,
    })
}

pub(crate) fn subject_parts(s: &KeySubject) -> (&'static str, &str) {
    s.parts()
}

pub(crate) fn encode_grant(grant: &Grant) -> Result<String, StoreError> {
    to_json(&grant.spec, "grant spec")
}

/// A grant from its row, in the order [`GRANT_COLUMNS`] lists them.
pub(crate) fn decode_grant(
    spec: &str,
    id: String,
    created_by: String,
    created_us: i64,
    revoked_us: Option<i64>,
    uses: i64,
    sum: i64,
) -> Result<StoredGrant, StoreError> {
    let spec = from_json(spec, &format!("grant {id} spec"))?;
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

/// The usage a consumed grant reports (`uses, sum_micros` after the spend).
pub(crate) fn usage_row(uses: i64, sum_micros: i64) -> Usage {
    Usage {
        uses: u64::try_from(uses).unwrap_or(0),
        sum: Amount(sum_micros),
    }
}

/// The refusal of a credential sealed for a version that another writer took first.
pub(crate) fn version_taken(reference: &CredentialRef, next: i64) -> StoreError {
    StoreError::Conflict(format!(
        "credential {} was sealed as version {} but the next version is {next}; another writer stored one first, retry",
        reference.name, reference.version
    ))
}

/// A credential version number as stored.
pub(crate) fn version_number(version: i64) -> Result<u32, StoreError> {
    u32::try_from(version).map_err(|_| StoreError::Corrupt(format!("credential version {version}")))
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
            version: version_number(version)?,
            scope: CredentialScope::from_owner_key(&owner)
                .map_err(vault_corrupt("credential owner"))?,
        },
        state: version_state(&state)?,
        master_key_id,
        created_at: to_ts(created_us, "credential creation time")?,
        retired_at: opt_ts(retired_us, "credential retirement time")?,
    })
}

fn version_state(state: &str) -> Result<VersionState, StoreError> {
    VersionState::parse(state)
        .ok_or_else(|| StoreError::Corrupt(format!("credential state {state:?}")))
}

/// Whether `reference` may be retired, given every version of its credential (`version, state`
/// rows): the rule is `writ_vault::check_retire`'s.
pub(crate) fn check_retire(
    reference: &CredentialRef,
    rows: Vec<(i64, String)>,
) -> Result<(), StoreError> {
    let versions = rows
        .into_iter()
        .map(|(v, s)| Ok((version_number(v)?, version_state(&s)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    writ_vault::check_retire(&reference.name, &versions, reference.version)
        .map_err(|e| StoreError::InvalidRequest(e.to_string()))
}

/// The columns `master_key_id, wrapped_key, ciphertext` of a credential version (the sealed
/// bytes are gone once it is retired).
pub(crate) type SealedRow = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// The sealed bytes of a live version from its row, if there is one.
pub(crate) fn sealed_row(
    reference: &CredentialRef,
    row: Option<SealedRow>,
) -> Result<Option<SealedCredential>, StoreError> {
    match row {
        None => Ok(None),
        Some((master_key_id, Some(wrapped_key), Some(ciphertext))) => Ok(Some(SealedCredential {
            reference: reference.clone(),
            master_key_id,
            wrapped_key,
            ciphertext,
        })),
        Some(_) => Err(StoreError::Corrupt(format!(
            "credential {reference} has no sealed bytes"
        ))),
    }
}

/// A password row (`phc, set_us, failures, locked_until_us`).
pub(crate) fn password_row(
    phc: String,
    set_us: i64,
    failures: i64,
    locked_until_us: Option<i64>,
) -> Result<PasswordRecord, StoreError> {
    let f = password_failures(failures, locked_until_us)?;
    Ok(PasswordRecord {
        phc,
        set_at: to_ts(set_us, "password set time")?,
        failures: f.failures,
        locked_until: f.locked_until,
    })
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

// The statements both backends run alike (PostgreSQL's `$N` parameters; SQLite runs them through
// `sqlite::sql`). Statements that differ between the dialects stay in the backends.

pub(crate) const ADD_USER: &str =
    "INSERT INTO identity_users (id, display_name, is_admin, created_us) VALUES ($1, $2, $3, $4)";

pub(crate) const ADD_USER_GROUP: &str =
    "INSERT INTO identity_user_groups (user_id, group_name) VALUES ($1, $2) ON CONFLICT DO NOTHING";

pub(crate) const USER_BY_ID: &str =
    "SELECT id, display_name, is_admin, created_us FROM identity_users WHERE id = $1";

pub(crate) const USER_GROUPS: &str =
    "SELECT group_name FROM identity_user_groups WHERE user_id = $1 ORDER BY group_name";

/// Takes name `$1` for a principal of kind `$2` (`user` or `agent`) in the namespace both share;
/// inserts nothing if the name is taken.
pub(crate) const CLAIM_NAME: &str =
    "INSERT INTO identity_names (name, kind) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

pub(crate) const NAME_HOLDER: &str = "SELECT kind FROM identity_names WHERE name = $1";

/// The columns of `identity_agents`, in the order [`RawAgent`] lists them.
macro_rules! agent_columns {
    () => {
        "id, owner, public_key, created_us, disabled_us, key_generation"
    };
}

pub(crate) const ADD_AGENT: &str = concat!(
    "INSERT INTO identity_agents (",
    agent_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);

pub(crate) const AGENT_BY_ID: &str = concat!(
    "SELECT ",
    agent_columns!(),
    " FROM identity_agents WHERE id = $1"
);

pub(crate) const AGENTS: &str = concat!(
    "SELECT ",
    agent_columns!(),
    " FROM identity_agents ORDER BY id"
);

/// Replaces agent `$1`'s public key with `$2` and moves its key generation on.
pub(crate) const SET_AGENT_KEY: &str =
    "UPDATE identity_agents SET public_key = $2, key_generation = key_generation + 1 WHERE id = $1";

pub(crate) const SET_AGENT_DISABLED: &str =
    "UPDATE identity_agents SET disabled_us = $2 WHERE id = $1";

/// Moves agent `$1`'s key generation on: tokens minted under an earlier one are refused.
pub(crate) const NEXT_KEY_GENERATION: &str =
    "UPDATE identity_agents SET key_generation = key_generation + 1 WHERE id = $1";

pub(crate) const ADD_API_KEY: &str = "INSERT INTO identity_api_keys
     (key_hash, key_id, subject_kind, subject_id, created_us, revoked_us)
     VALUES ($1, $2, $3, $4, $5, $6)";

/// The live (unrevoked) key with hash `$1`.
pub(crate) const LIVE_API_KEY: &str =
    "SELECT key_id, subject_kind, subject_id, created_us, revoked_us FROM identity_api_keys
     WHERE key_hash = $1 AND revoked_us IS NULL";

pub(crate) const REVOKE_API_KEYS: &str = "UPDATE identity_api_keys SET revoked_us = $3
     WHERE subject_kind = $1 AND subject_id = $2 AND revoked_us IS NULL";

pub(crate) const ADD_GRANT: &str = "INSERT INTO identity_grants
     (id, user_id, agent_id, spec, created_by, created_us, expires_us, revoked_us, max_uses, max_sum)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// The columns of a grant, in the order [`decode_grant`] takes them.
macro_rules! grant_columns {
    () => {
        "spec, id, created_by, created_us, revoked_us, uses, sum_micros"
    };
}
pub(crate) const GRANT_COLUMNS: &str = grant_columns!();

pub(crate) const GRANT_BY_ID: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM identity_grants WHERE id = $1"
);

pub(crate) const REVOKE_GRANT: &str =
    "UPDATE identity_grants SET revoked_us = $2 WHERE id = $1 AND revoked_us IS NULL";

pub(crate) const GRANT_EXISTS: &str = "SELECT 1 FROM identity_grants WHERE id = $1";

/// Spends one use and `$2` micros of grant `$1` at time `$3`, only if it is live and within both
/// budgets: one statement, so that the conditions and the increment apply atomically (the
/// databases serialise writers of the row and re-check the conditions on its newest version).
macro_rules! spend_grant {
    () => {
        "UPDATE identity_grants SET uses = uses + 1, sum_micros = sum_micros + $2
         WHERE id = $1 AND revoked_us IS NULL AND expires_us > $3
           AND (max_uses IS NULL OR uses < max_uses)
           AND (max_sum IS NULL OR sum_micros + $2 <= max_sum)"
    };
}
/// The spend of [`Change::SpendGrant`](crate::Change::SpendGrant).
pub(crate) const SPEND_GRANT: &str = spend_grant!();
/// The spend of [`IdentityStore::consume_grant`], answering the usage after it.
pub(crate) const CONSUME_GRANT: &str = concat!(spend_grant!(), " RETURNING uses, sum_micros");

/// The current version of credential (`$1`, owner `$2`) becomes the previous one.
pub(crate) const DEMOTE_CURRENT_CREDENTIAL: &str = "UPDATE vault_credentials SET state = 'previous'
     WHERE name = $1 AND owner = $2 AND state = 'current'";

pub(crate) const ADD_CREDENTIAL: &str = "INSERT INTO vault_credentials
     (name, owner, version, state, master_key_id, wrapped_key, ciphertext, created_us)
     VALUES ($1, $2, $3, 'current', $4, $5, $6, $7)";

pub(crate) const SEALED_CREDENTIAL: &str =
    "SELECT master_key_id, wrapped_key, ciphertext FROM vault_credentials
     WHERE name = $1 AND owner = $2 AND version = $3 AND state <> 'retired'";

pub(crate) const CREDENTIAL_STATES: &str =
    "SELECT version, state FROM vault_credentials WHERE name = $1 AND owner = $2";

/// Retires a version and destroys its sealed bytes.
pub(crate) const RETIRE_CREDENTIAL: &str = "UPDATE vault_credentials
     SET state = 'retired', retired_us = $4, wrapped_key = NULL, ciphertext = NULL
     WHERE name = $1 AND owner = $2 AND version = $3";

pub(crate) const PRUNE_ASSERTION_JTIS: &str =
    "DELETE FROM identity_assertion_jtis WHERE expires_us <= $1";

/// Inserts nothing if `(agent, jti)` is already recorded.
pub(crate) const RECORD_ASSERTION_JTI: &str =
    "INSERT INTO identity_assertion_jtis (agent, jti, expires_us) VALUES ($1, $2, $3)
     ON CONFLICT (agent, jti) DO NOTHING";

/// Sets (or replaces) a password, clearing failures and lock.
pub(crate) const SET_PASSWORD: &str =
    "INSERT INTO identity_user_passwords (user_id, phc, set_us, failures, locked_until_us)
     VALUES ($1, $2, $3, 0, NULL)
     ON CONFLICT (user_id) DO UPDATE SET
         phc = excluded.phc, set_us = excluded.set_us, failures = 0, locked_until_us = NULL";

pub(crate) const CLEAR_PASSWORD: &str = "DELETE FROM identity_user_passwords WHERE user_id = $1";

pub(crate) const PASSWORD: &str =
    "SELECT phc, set_us, failures, locked_until_us FROM identity_user_passwords WHERE user_id = $1";

pub(crate) const RESET_PASSWORD_FAILURES: &str =
    "UPDATE identity_user_passwords SET failures = 0, locked_until_us = NULL
     WHERE user_id = $1 AND (failures <> 0 OR locked_until_us IS NOT NULL)";
