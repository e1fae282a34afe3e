//! The gateway's shared state: the database, the policy engine, the connectors, the keys, and
//! the background work (approval expiry, recovery of interrupted actions, checkpoints).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use writ_audit::NoteSigner;
use writ_connectors::Connector;
use writ_identity::oidc::OidcVerifier;
use writ_identity::{CachingVerifier, TokenIssuer};
use writ_policy::PolicyEngine;
use writ_store::{Database, StoredCheckpoint};
use writ_vault::MasterKey;

use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// Everything the gateway is built from.
pub struct GatewayParts {
    pub db: Arc<dyn Database>,
    pub policy: Arc<PolicyEngine>,
    pub connectors: BTreeMap<String, Arc<dyn Connector>>,
    pub master_key: Arc<MasterKey>,
    pub issuer: TokenIssuer,
    pub checkpoint_signer: NoteSigner,
    pub oidc: Vec<OidcVerifier>,
    /// The issuers people can sign in to the console with.
    pub oidc_sign_in: Vec<crate::oidc_sign_in::OidcSignIn>,
    /// Whether local users may sign in to the console with a password (`identity.passwords`).
    pub passwords: bool,
    pub limits: LimitsConfig,
    /// The URL clients reach Writ at (for the token endpoint and links).
    pub public_url: String,
    /// Browser origins allowed at `/mcp` besides the server's own.
    pub allowed_origins: Vec<String>,
    /// The longest any connector call may take: an action executing for longer than this (plus
    /// a margin) cannot still be running and is marked *outcome unknown*.
    pub max_connector_timeout: Duration,
}

/// A verification of the whole log: when, at whose request, and what it found.
#[derive(Debug, Clone)]
pub struct LastVerification {
    pub at: writ_core::Timestamp,
    /// `writ` (at start) or `user:<id>`.
    pub by: String,
    /// The entries, root and checkpoints covered, or the first problem found.
    pub result: Result<writ_store::VerifyReport, String>,
}

/// The running gateway, shared by every request. Its fields are private: a face reads the store
/// through [`Gateway::reads`] and changes it only through the pipeline, the admin service and
/// `auth`, which record what they do.
pub struct Gateway {
    pub(crate) db: Arc<dyn Database>,
    pub(crate) policy: Arc<PolicyEngine>,
    pub(crate) connectors: BTreeMap<String, Arc<dyn Connector>>,
    pub(crate) master_key: Arc<MasterKey>,
    pub(crate) issuer: TokenIssuer,
    pub(crate) tokens: CachingVerifier,
    pub(crate) checkpoint_signer: NoteSigner,
    pub(crate) oidc: Vec<OidcVerifier>,
    pub(crate) oidc_sign_in: Vec<crate::oidc_sign_in::OidcSignIn>,
    pub(crate) passwords: bool,
    pub(crate) limits: LimitsConfig,
    pub(crate) public_url: String,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) max_connector_timeout: Duration,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: RateLimiter,
    /// Bumped on every change of an action's state, so that long-polls wake up.
    pub(crate) changes: watch::Sender<u64>,
    /// Bumped when the tools an MCP client may see can have changed: an upstream's tools, the
    /// policy bundle, a grant. Each MCP session then sends `notifications/tools/list_changed`.
    pub(crate) tools: watch::Sender<u64>,
    /// The outcome of the latest verification of the whole log by this process.
    pub(crate) last_verification: std::sync::Mutex<Option<LastVerification>>,
    /// Cancelled when the server stops: ends the MCP sessions, whose open streams would
    /// otherwise keep a graceful shutdown waiting.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

impl Gateway {
    pub fn new(parts: GatewayParts) -> Arc<Gateway> {
        let (changes, _) = watch::channel(0);
        Arc::new(Gateway {
            tokens: CachingVerifier::new(parts.issuer.verifier(), 16_384),
            limiter: RateLimiter::new(parts.limits.actions_per_agent_per_minute),
            db: parts.db,
            policy: parts.policy,
            connectors: parts.connectors,
            master_key: parts.master_key,
            issuer: parts.issuer,
            checkpoint_signer: parts.checkpoint_signer,
            oidc: parts.oidc,
            oidc_sign_in: parts.oidc_sign_in,
            passwords: parts.passwords,
            limits: parts.limits,
            public_url: parts.public_url.trim_end_matches('/').to_owned(),
            allowed_origins: parts.allowed_origins,
            max_connector_timeout: parts.max_connector_timeout,
            metrics: Metrics::new(),
            changes,
            tools: watch::channel(0).0,
            last_verification: std::sync::Mutex::new(None),
            shutdown: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// What a face may read of the store (nothing it may write).
    pub fn reads(&self) -> crate::reads::Reads<'_> {
        crate::reads::Reads::new(self.db.as_ref())
    }

    /// The console's sessions and pending sign-ins (a face's own state, kept in the database so
    /// that every replica shares it).
    pub fn sessions(&self) -> &dyn writ_store::SessionStore {
        self.db.as_ref()
    }

    /// The policy engine: the bundle in effect, its candidate, reloads.
    pub fn policy(&self) -> &PolicyEngine {
        &self.policy
    }

    /// The configured connectors, by name.
    pub fn connectors(&self) -> &BTreeMap<String, Arc<dyn Connector>> {
        &self.connectors
    }

    /// The issuer of delegated tokens (its JWKS is public).
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// The issuers people can sign in to the console with.
    pub fn oidc_sign_in(&self) -> &[crate::oidc_sign_in::OidcSignIn] {
        &self.oidc_sign_in
    }

    /// Whether local users may sign in with a password (`identity.passwords`).
    pub fn passwords_enabled(&self) -> bool {
        self.passwords
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// The URL clients reach Writ at, without a trailing `/`.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Browser origins allowed at `/mcp` besides the server's own.
    pub fn allowed_origins(&self) -> &[String] {
        &self.allowed_origins
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cancelled when the server stops.
    pub fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        &self.shutdown
    }

    /// The token endpoint (RFC 8693 exchange): authenticates the subject and actor tokens,
    /// loads the grant, decides and mints a delegated token.
    pub async fn exchange_token(
        &self,
        request: &writ_identity::exchange::TokenExchangeRequest,
        now: writ_core::Timestamp,
    ) -> Result<writ_identity::exchange::TokenResponse, writ_identity::exchange::OAuthError> {
        crate::auth::exchange_token(
            self.db.as_ref(),
            &self.issuer,
            request,
            &self.oidc,
            &self.token_endpoint(),
            now,
        )
        .await
    }

    /// Checks a console password sign-in and counts the result towards the lock (see
    /// [`crate::auth::passwords::sign_in`]).
    pub async fn password_sign_in(
        &self,
        user_id: &str,
        candidate: &writ_identity::password::Password,
        now: writ_core::Timestamp,
    ) -> Result<crate::auth::passwords::SignIn, writ_store::StoreError> {
        crate::auth::passwords::sign_in(self.db.as_ref(), user_id, candidate, now).await
    }

    /// The token endpoint's URL (the audience of agent client assertions).
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.public_url)
    }

    pub(crate) fn notify_change(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Verifies the whole log (every entry re-hashed, every stored checkpoint against the tree
    /// and this server's verifier key) and keeps the outcome as the last verification.
    pub async fn verify_log(&self, by: &str) -> LastVerification {
        let options = writ_store::VerifyOptions {
            verifier: Some(self.checkpoint_signer.verifier()),
            trusted_checkpoint: None,
            batch: 0,
        };
        let result = writ_store::verify_log(
            self.db.as_ref() as &dyn writ_store::Store,
            &options,
            &|_| {},
        )
        .await
        .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "the audit log does not verify");
        }
        let done = LastVerification {
            at: writ_core::Timestamp::now(),
            by: by.to_owned(),
            result,
        };
        *self
            .last_verification
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(done.clone());
        done
    }

    /// The latest verification's outcome, if any ran.
    pub fn last_verification(&self) -> Option<LastVerification> {
        self.last_verification
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The administration service (users, agents, keys, grants) over this gateway's store,
    /// checking grants against the serving policy bundle.
    pub fn admin(&self) -> crate::admin::Admin<'_> {
        crate::admin::Admin::new(self.db.as_ref(), self.policy.current(), &self.tools)
    }

    /// The tools an MCP client may see can have changed.
    pub fn notify_tools_changed(&self) {
        self.tools.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes whenever an action's state changed in this process (long-polls, live inboxes).
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes whenever the tools an MCP client may see can have changed: an upstream's tools,
    /// the policy bundle, a grant.
    pub fn subscribe_tools(&self) -> watch::Receiver<u64> {
        self.tools.subscribe()
    }

    /// The key that verifies this server's signed checkpoints (C2SP note verifier key).
    pub fn verifier_key(&self) -> String {
        self.checkpoint_signer.verifier().to_string()
    }

    /// Verifies a delegated token presented by `agent` (the cached verification of Writ's own
    /// tokens: signature, issuer, audience, times, presenter).
    pub fn verify_token(
        &self,
        token: &str,
        agent: &writ_identity::AgentId,
        now: writ_core::Timestamp,
    ) -> Result<Arc<writ_identity::DelegatedClaims>, writ_identity::TokenError> {
        self.tokens.verify(token, agent, now)
    }

    /// Every connector's health (`{"state": "ready"}`, or why an upstream is down).
    pub fn connector_status(&self) -> serde_json::Map<String, serde_json::Value> {
        self.connectors
            .iter()
            .map(|(name, c)| (name.clone(), c.status()))
            .collect()
    }

    /// Signs and stores a checkpoint of the current tree head (none for an empty log, or when
    /// the latest checkpoint already covers it). Returns the signed note.
    pub async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, crate::Error> {
        let head = self.db.tree_head().await?;
        if let Some(latest) = self.db.latest_checkpoint().await?
            && latest.tree_size == head.size
        {
            return Ok(Some(latest));
        }
        if head.size == 0 {
            return Ok(None);
        }
        let checkpoint = writ_audit::Checkpoint {
            origin: self.checkpoint_signer.name().to_owned(),
            size: head.size,
            root: head.root,
            extensions: Vec::new(),
        };
        let note = writ_audit::sign_checkpoint(&checkpoint, &self.checkpoint_signer)
            .map_err(|e| crate::Error::internal(format!("signing a checkpoint: {e}")))?;
        let stored = StoredCheckpoint {
            tree_size: head.size,
            root_hash: head.root,
            note,
            created_us: writ_core::Timestamp::now().as_micros(),
        };
        self.db.add_checkpoint(stored.clone()).await?;
        Ok(Some(stored))
    }
}
