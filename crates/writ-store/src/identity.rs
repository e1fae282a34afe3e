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
use writ_identity::{ActionAttempt, AgentId, Amount, Grant, GrantDenial, GrantId, Usage, UserId};
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

/// Checks `attempt` against grant `id` and spends its budget: the grant check as the pipeline
/// runs it. A denial says, in words, which rule failed.
pub async fn use_grant(
    store: &dyn IdentityStore,
    id: &GrantId,
    attempt: &ActionAttempt<'_>,
    now: Timestamp,
) -> Result<Result<Usage, GrantDenial>, StoreError> {
    // Two tries: if a concurrent use spent the budget between our check and our update, the
    // second check explains the refusal with current numbers.
    for _ in 0..2 {
        let Some(stored) = store.grant(id).await? else {
            return Err(StoreError::NotFound(format!("grant {id}")));
        };
        let amount = match stored.grant.check(attempt, now, stored.usage) {
            Ok(amount) => amount,
            Err(denial) => return Ok(Err(denial)),
        };
        if let Some(usage) = store.consume_grant(id, amount, now).await? {
            return Ok(Ok(usage));
        }
    }
    Err(StoreError::InvalidRequest(format!(
        "grant {id} is in heavy concurrent use and its budget could not be spent; retry"
    )))
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

/// Authenticates a subject token to a user: a user API key, or an ID token of one of the
/// configured OIDC issuers (verified against its JWKS; the mapped user id must exist locally).
/// Errors are OAuth errors that never repeat the token.
pub async fn authenticate_user(
    store: &dyn IdentityStore,
    token: &writ_identity::exchange::PresentedToken,
    oidc: &[writ_identity::oidc::OidcVerifier],
    now: Timestamp,
) -> Result<UserId, writ_identity::exchange::OAuthError> {
    use writ_identity::apikey::{KeyKind, parse_presented};
    use writ_identity::exchange::{
        OAuthError, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_WRIT_API_KEY,
    };
    if token.token_type == TOKEN_TYPE_ID_TOKEN || token.token_type == TOKEN_TYPE_JWT {
        let issuer = writ_identity::oidc::claimed_issuer(&token.value);
        let verifier = oidc
            .iter()
            .find(|v| Some(&v.config.issuer) == issuer.as_ref())
            .ok_or_else(|| {
                OAuthError::invalid_grant("the subject token's issuer is not trusted")
            })?;
        let user = verifier
            .verify(&token.value, now)
            .map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
        // No provisioning on first use: the mapped user must already exist locally (created by
        // an admin with `writ users add`), so an issuer cannot mint Writ users by itself.
        return match store.user(&user.id).await {
            Ok(Some(_)) => Ok(user.id),
            Ok(None) => Err(OAuthError::invalid_grant(format!(
                "the ID token's user {} is not a Writ user; an admin must add it first",
                user.id
            ))),
            Err(e) => {
                tracing::error!(error = %e, "store error while authenticating a subject token");
                Err(OAuthError {
                    error: "server_error",
                    error_description: "the store is unavailable; retry later".into(),
                })
            }
        };
    }
    if token.token_type != TOKEN_TYPE_WRIT_API_KEY {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type {} is not accepted here; present a user API key ({TOKEN_TYPE_WRIT_API_KEY})",
            token.token_type
        )));
    }
    let invalid = || OAuthError::invalid_grant("the subject token is not a valid user API key");
    let (kind, hash) = parse_presented(&token.value).map_err(|_| invalid())?;
    if kind != KeyKind::User {
        return Err(invalid());
    }
    match store.api_key(&hash).await {
        Ok(Some(ApiKeyRecord {
            subject: KeySubject::User(user),
            ..
        })) => Ok(user),
        Ok(_) => Err(invalid()),
        Err(e) => {
            tracing::error!(error = %e, "store error while authenticating a subject token");
            Err(OAuthError {
                error: "server_error",
                error_description: "the store is unavailable; retry later".into(),
            })
        }
    }
}

/// Authenticates an actor token to an enabled agent: an agent API key, or a client assertion
/// (RFC 7523) signed with the agent's registered key for `token_endpoint`. Returns the agent
/// with its key generation, read so that a rotation racing this call cannot lend the new
/// generation to the old credential: the generation is read after the key was found live and
/// the key is checked again afterwards (API key), or read with the public key it verifies
/// against (assertion).
pub async fn authenticate_agent(
    store: &dyn IdentityStore,
    token: &writ_identity::exchange::PresentedToken,
    token_endpoint: &str,
    now: Timestamp,
) -> Result<(AgentId, u64), writ_identity::exchange::OAuthError> {
    use writ_identity::apikey::{KeyKind, parse_presented};
    use writ_identity::assertion::{AgentPublicKey, claimed_agent, verify_client_assertion};
    use writ_identity::exchange::{OAuthError, TOKEN_TYPE_JWT, TOKEN_TYPE_WRIT_API_KEY};
    let unavailable = |e: StoreError| {
        tracing::error!(error = %e, "store error while authenticating an actor token");
        OAuthError {
            error: "server_error",
            error_description: "the store is unavailable; retry later".into(),
        }
    };
    let invalid =
        |why: &str| OAuthError::invalid_client(format!("the actor token is not valid: {why}"));
    match token.token_type.as_str() {
        TOKEN_TYPE_WRIT_API_KEY => {
            let (kind, hash) =
                parse_presented(&token.value).map_err(|_| invalid("malformed API key"))?;
            if kind != KeyKind::Agent {
                return Err(invalid("not an agent API key"));
            }
            let live = |record: Option<ApiKeyRecord>| match record {
                Some(ApiKeyRecord {
                    subject: KeySubject::Agent(agent),
                    ..
                }) => Ok(agent),
                _ => Err(invalid("unknown or revoked API key")),
            };
            let agent = live(store.api_key(&hash).await.map_err(unavailable)?)?;
            let record = enabled(store.agent(&agent).await.map_err(unavailable)?, &agent)?;
            live(store.api_key(&hash).await.map_err(unavailable)?)?;
            Ok((agent, record.key_generation))
        }
        TOKEN_TYPE_JWT => {
            let agent = claimed_agent(&token.value).map_err(|e| invalid(&e.to_string()))?;
            let record = enabled(store.agent(&agent).await.map_err(unavailable)?, &agent)?;
            let generation = record.key_generation;
            let jwk = record
                .public_key
                .ok_or_else(|| invalid("the agent has no registered public key"))?;
            let jwk: serde_json::Value = serde_json::from_str(&jwk)
                .map_err(|_| invalid("the agent's stored key is unreadable"))?;
            let key = AgentPublicKey::from_jwk(&jwk).map_err(|e| invalid(&e.to_string()))?;
            let verified = verify_client_assertion(&token.value, &agent, &key, token_endpoint, now)
                .map_err(|e| invalid(&e.to_string()))?;
            // Replay protection (RFC 7523 §3): a jti is accepted once while the assertion lives.
            let until = Timestamp::from_micros(verified.replay_until_micros())
                .map_err(|_| invalid("the assertion's exp is out of range"))?;
            let fresh = store
                .record_assertion_jti(&verified.agent, &verified.jti, until, now)
                .await
                .map_err(unavailable)?;
            if !fresh {
                return Err(invalid(
                    "this assertion's jti was already used; sign a new assertion with a fresh jti",
                ));
            }
            Ok((verified.agent, generation))
        }
        other => Err(OAuthError::invalid_request(format!(
            "actor_token_type {other} is not accepted"
        ))),
    }
}

/// The whole token endpoint: authenticate both tokens, load the grant, decide, mint.
pub async fn exchange_token(
    store: &dyn IdentityStore,
    issuer: &writ_identity::TokenIssuer,
    request: &writ_identity::exchange::TokenExchangeRequest,
    oidc: &[writ_identity::oidc::OidcVerifier],
    token_endpoint: &str,
    now: Timestamp,
) -> Result<writ_identity::exchange::TokenResponse, writ_identity::exchange::OAuthError> {
    use writ_identity::exchange::{OAuthError, complete_exchange};
    let user = authenticate_user(store, &request.subject, oidc, now).await?;
    let (agent, generation) =
        authenticate_agent(store, &request.actor, token_endpoint, now).await?;
    let grant = match store.grant(&request.requested.grant_id).await {
        Ok(Some(g)) => g.grant,
        Ok(None) => {
            return Err(OAuthError::invalid_grant(format!(
                "grant {} was not found",
                request.requested.grant_id
            )));
        }
        Err(e) => {
            tracing::error!(error = %e, "store error while loading a grant");
            return Err(OAuthError {
                error: "server_error",
                error_description: "the store is unavailable; retry later".into(),
            });
        }
    };
    complete_exchange(issuer, request, &user, &agent, generation, &grant, now)
}

/// The agent's record if it exists and is enabled; otherwise the OAuth refusal.
fn enabled(
    record: Option<AgentRecord>,
    agent: &AgentId,
) -> Result<AgentRecord, writ_identity::exchange::OAuthError> {
    use writ_identity::exchange::OAuthError;
    match record {
        Some(r) if r.disabled_at.is_none() => Ok(r),
        Some(_) => Err(OAuthError::invalid_client(format!(
            "agent {agent} is disabled; its owner or an admin can enable it again"
        ))),
        None => Err(OAuthError::invalid_client(format!(
            "the actor token is not valid: agent {agent} does not exist"
        ))),
    }
}
