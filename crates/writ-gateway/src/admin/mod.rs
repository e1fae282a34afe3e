//! Administration of identity: users, agents and their keys, grants. One service for every face
//! — the HTTP API, the console, and the `writ` CLI run on the server's host — so that each rule
//! is written once and each change is recorded once, with the words of [`AdminEvent`].
//!
//! An [`Actor`] performs each operation: a user (as the API and the console authenticate them),
//! or the operator at the server's host (the local CLI), who is trusted like an admin. The
//! rules: an admin creates users; a user registers agents for themself (an admin for anyone);
//! an agent's owner or an admin disables, enables or rotates it; a user lends their authority
//! only to agents they own (an admin may grant across owners, which the entry records); a
//! grant's action patterns must each cover an action of the serving bundle's schema; its user
//! or an admin revokes it.

mod events;

use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;
use writ_core::{ActionId, EntryKind, NewEntry, Timestamp};
use writ_identity::apikey::{self, KeyKind};
use writ_identity::password::Password;
use writ_identity::{AgentId, Grant, GrantId, GrantSpec, UserId};
use writ_policy::Bundle;
use writ_store::Database;
use writ_store::identity::{AgentRecord, ApiKeyRecord, KeySubject, UserRecord};

pub use events::AdminEvent;

use crate::auth::passwords::{self, Authority, PasswordChangeError};
use crate::error::Error;

/// Who performs an administrative operation.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A signed-in user (API key, console session).
    User(UserRecord),
    /// The operator at the server's host (the local CLI): trusted like an admin.
    Operator,
}

impl Actor {
    pub fn is_admin(&self) -> bool {
        match self {
            Actor::User(u) => u.admin,
            Actor::Operator => true,
        }
    }

    /// The actor of the entries it causes: `user:<id>` or `operator`.
    pub fn label(&self) -> String {
        match self {
            Actor::User(u) => format!("user:{}", u.id),
            Actor::Operator => "operator".to_owned(),
        }
    }

    fn user_id(&self) -> Option<&UserId> {
        match self {
            Actor::User(u) => Some(&u.id),
            Actor::Operator => None,
        }
    }

    /// The principal a grant is issued by: a user. The operator issues none of their own.
    fn principal(&self) -> Result<writ_identity::Principal, Error> {
        match self {
            Actor::User(u) => Ok(writ_identity::Principal::User {
                id: u.id.clone(),
                admin: u.admin,
            }),
            Actor::Operator => Err(Error::invalid(
                "a grant is issued on a user's authority: name the user who grants it",
            )),
        }
    }
}

/// A grant as the API and the console ask for it: relative expiry, the user defaulting to the
/// one who asks.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    #[serde(default)]
    pub user: Option<String>,
    pub agent: String,
    pub actions: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<writ_identity::Constraint>,
    /// Seconds from now (default one day, at most 366 days).
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub max_uses: Option<u64>,
    #[serde(default)]
    pub sum_budget: Option<writ_identity::SumBudget>,
}

impl GrantRequest {
    /// The grant's spec, for `me` when the request names no user.
    pub fn into_spec(self, me: &UserId, now: Timestamp) -> Result<GrantSpec, Error> {
        let user = match self.user {
            Some(u) => UserId::new(u).map_err(|e| Error::invalid(e.to_string()))?,
            None => me.clone(),
        };
        let agent = AgentId::new(self.agent).map_err(|e| Error::invalid(e.to_string()))?;
        let secs = self.expires_in.unwrap_or(86_400).clamp(1, 366 * 86_400);
        let expires_at =
            Timestamp::from_micros(now.as_micros() + i64::try_from(secs).unwrap_or(0) * 1_000_000)
                .map_err(|e| Error::invalid(e.to_string()))?;
        Ok(GrantSpec {
            user,
            agent,
            actions: self.actions,
            resources: self.resources,
            constraints: self.constraints,
            expires_at,
            max_uses: self.max_uses,
            sum_budget: self.sum_budget,
        })
    }
}

/// An API key as issued: the key (shown once, zeroized when dropped) and its public id.
pub struct IssuedKey {
    pub key: zeroize::Zeroizing<String>,
    pub key_id: String,
}

/// The administration service over one database.
pub struct Admin<'a> {
    db: &'a dyn Database,
    /// The serving policy bundle, to check grants' action patterns against (none for the local
    /// CLI, which does not know the bundle the server serves).
    bundle: Option<Arc<Bundle>>,
    /// Told when the tools an MCP client may see can have changed.
    tools: Option<&'a watch::Sender<u64>>,
}

impl<'a> Admin<'a> {
    /// The service as the running gateway uses it.
    pub(crate) fn new(
        db: &'a dyn Database,
        bundle: Arc<Bundle>,
        tools: &'a watch::Sender<u64>,
    ) -> Self {
        Admin {
            db,
            bundle: Some(bundle),
            tools: Some(tools),
        }
    }

    /// The service for the operator's CLI on the server's host: no bundle to check grant
    /// patterns against, no MCP sessions to tell.
    pub fn local(db: &'a dyn Database) -> Self {
        Admin {
            db,
            bundle: None,
            tools: None,
        }
    }

    /// Appends one `admin` entry for `event` by `actor`.
    pub async fn record(&self, actor: &Actor, event: AdminEvent) -> Result<(), Error> {
        self.record_as(&actor.label(), event).await
    }

    /// Appends one `admin` entry for `event` with an actor given as text (`agent:<id>` for a
    /// token an agent obtained).
    pub async fn record_as(&self, actor: &str, event: AdminEvent) -> Result<(), Error> {
        let entry = NewEntry::new(
            ActionId::generate(),
            EntryKind::Admin,
            Some(actor.to_owned()),
            event.payload(),
        )?;
        self.db.append(vec![entry]).await?;
        Ok(())
    }

    fn tools_changed(&self) {
        if let Some(tools) = self.tools {
            tools.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A new API key for `subject`; only its SHA-256 is stored.
    pub async fn issue_key(&self, subject: KeySubject, kind: KeyKind) -> Result<IssuedKey, Error> {
        let key = apikey::generate(kind).map_err(|e| Error::internal(e.to_string()))?;
        self.db
            .add_api_key(
                &key.hash,
                &ApiKeyRecord {
                    key_id: key.key_id.clone(),
                    subject,
                    created_at: Timestamp::now(),
                    revoked_at: None,
                },
            )
            .await?;
        Ok(IssuedKey {
            key: key.key,
            key_id: key.key_id,
        })
    }

    /// Adds `user` (an admin's or the operator's act), with an API key when `with_key`.
    pub async fn create_user(
        &self,
        actor: &Actor,
        user: &UserRecord,
        with_key: bool,
    ) -> Result<Option<IssuedKey>, Error> {
        if !actor.is_admin() {
            return Err(Error::forbidden(format!(
                "{} is not an admin; only admins add users",
                actor.label()
            )));
        }
        for g in &user.groups {
            writ_core::id::validate_token("group", g, 128)
                .map_err(|e| Error::invalid(e.to_string()))?;
        }
        self.db.add_user(user).await?;
        let key = match with_key {
            true => Some(
                self.issue_key(KeySubject::User(user.id.clone()), KeyKind::User)
                    .await?,
            ),
            false => None,
        };
        self.record(
            actor,
            AdminEvent::UserCreated {
                user: user.id.to_string(),
                admin: user.admin,
                groups: user.groups.clone(),
                key_id: key.as_ref().map(|k| k.key_id.clone()),
            },
        )
        .await?;
        Ok(key)
    }

    /// Registers agent `id` owned by `owner` (the actor's own when `None`), authenticating with
    /// `public_key` (a JWK) or, without one, an API key issued now.
    pub async fn create_agent(
        &self,
        actor: &Actor,
        id: AgentId,
        owner: Option<UserId>,
        public_key: Option<String>,
    ) -> Result<(AgentRecord, Option<IssuedKey>), Error> {
        let owner = match (owner, actor.user_id()) {
            (Some(o), _) => o,
            (None, Some(me)) => me.clone(),
            (None, None) => return Err(Error::invalid("name the agent's owner")),
        };
        if actor.user_id() != Some(&owner) && !actor.is_admin() {
            return Err(Error::forbidden(
                "only an admin can register an agent for another user",
            ));
        }
        if self.db.user(&owner).await?.is_none() {
            return Err(Error::not_found(format!("user {owner} does not exist")));
        }
        let record = AgentRecord::new(id, owner, public_key, Timestamp::now());
        self.db.add_agent(&record).await?;
        let key = match record.public_key {
            None => Some(
                self.issue_key(KeySubject::Agent(record.id.clone()), KeyKind::Agent)
                    .await?,
            ),
            Some(_) => None,
        };
        self.record(
            actor,
            AdminEvent::AgentCreated {
                agent: record.id.to_string(),
                owner: record.owner.to_string(),
                credential: if record.public_key.is_some() {
                    "public_key"
                } else {
                    "api_key"
                },
                key_id: key.as_ref().map(|k| k.key_id.clone()),
            },
        )
        .await?;
        Ok((record, key))
    }

    /// Agent `id`, if the actor owns it or is an admin.
    pub async fn own_agent(&self, actor: &Actor, id: &AgentId) -> Result<AgentRecord, Error> {
        let agent = self
            .db
            .agent(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("agent {id} does not exist")))?;
        if actor.user_id() != Some(&agent.owner) && !actor.is_admin() {
            return Err(Error::forbidden(format!(
                "only agent {id}'s owner {} or an admin can change it",
                agent.owner
            )));
        }
        Ok(agent)
    }

    /// Sets `user`'s console password (after the rules and, for the user themselves, the
    /// current password: see [`crate::auth::passwords::change`]) and records `password.set` by
    /// `actor`. Returns the instant it was set: sessions opened with an older password end.
    pub async fn set_password(
        &self,
        actor: &Actor,
        user: &UserId,
        new: &Password,
        authority: Authority,
    ) -> Result<Timestamp, PasswordChangeError> {
        let set_at = passwords::change(self.db, user, new, authority, Timestamp::now()).await?;
        let event = AdminEvent::PasswordSet {
            user: user.to_string(),
        };
        self.record(actor, event)
            .await
            .map_err(PasswordChangeError::Record)?;
        Ok(set_at)
    }

    /// Clears `user`'s console password (a forgotten password: they sign in with their API key
    /// until they set a new one) and records `password.cleared` by `actor`, an admin or the
    /// operator. Returns whether there was one.
    pub async fn clear_password(&self, actor: &Actor, user: &UserId) -> Result<bool, Error> {
        if !actor.is_admin() {
            return Err(Error::forbidden(
                "only an admin can clear another user's password",
            ));
        }
        if self.db.user(user).await?.is_none() {
            return Err(Error::not_found(format!("user {user} does not exist")));
        }
        let cleared = self.db.clear_password(user).await?;
        let event = AdminEvent::PasswordCleared {
            user: user.to_string(),
            cleared,
        };
        self.record(actor, event).await?;
        Ok(cleared)
    }

    /// Disables agent `id` (its keys and tokens are refused from the next request on, on every
    /// replica) or enables it again.
    pub async fn set_agent_enabled(
        &self,
        actor: &Actor,
        id: &AgentId,
        enabled: bool,
    ) -> Result<(), Error> {
        let agent = self.own_agent(actor, id).await?;
        let at = (!enabled).then(Timestamp::now);
        self.db.set_agent_disabled(&agent.id, at).await?;
        let agent = agent.id.to_string();
        let event = match enabled {
            true => AdminEvent::AgentEnabled { agent },
            false => AdminEvent::AgentDisabled { agent },
        };
        self.record(actor, event).await?;
        self.tools_changed();
        Ok(())
    }

    /// Replaces agent `id`'s credential: every API key of it is revoked, then either
    /// `public_key` (a JWK) is registered, or one new API key is issued. Either way the agent's
    /// key generation moves on, so tokens minted with the old credential are refused from the
    /// next request on. Returns how many API keys were revoked and the new key, if any.
    pub async fn rotate_agent_key(
        &self,
        actor: &Actor,
        id: &AgentId,
        public_key: Option<String>,
    ) -> Result<(u64, Option<IssuedKey>), Error> {
        let agent = self.own_agent(actor, id).await?;
        let revoked = self
            .db
            .revoke_api_keys(&KeySubject::Agent(agent.id.clone()), Timestamp::now())
            .await?;
        let key = match &public_key {
            Some(jwk) => {
                self.db.set_agent_public_key(&agent.id, Some(jwk)).await?;
                None
            }
            None => {
                self.db.set_agent_public_key(&agent.id, None).await?;
                Some(
                    self.issue_key(KeySubject::Agent(agent.id.clone()), KeyKind::Agent)
                        .await?,
                )
            }
        };
        self.record(
            actor,
            AdminEvent::AgentKeyRotated {
                agent: agent.id.to_string(),
                revoked_api_keys: revoked,
                key_id: key.as_ref().map(|k| k.key_id.clone()),
            },
        )
        .await?;
        Ok((revoked, key))
    }

    /// Issues a grant on the actor's authority: for themself (for anyone, when an admin), to an
    /// agent the grant's user owns (to any agent, when an admin, which the entry records).
    pub async fn issue_grant(&self, actor: &Actor, spec: GrantSpec) -> Result<Grant, Error> {
        let now = Timestamp::now();
        let Some(agent) = self.db.agent(&spec.agent).await? else {
            return Err(Error::not_found(format!(
                "agent {} does not exist",
                spec.agent
            )));
        };
        if self.db.user(&spec.user).await?.is_none() {
            return Err(Error::not_found(format!(
                "user {} does not exist",
                spec.user
            )));
        }
        // A user lends their authority only to their own agents: otherwise another user's agent
        // could act for them, and that agent's owner would approve its actions.
        let cross_owner = agent.owner != spec.user;
        if cross_owner && !actor.is_admin() {
            return Err(Error::forbidden(format!(
                "agent {} belongs to user {}; a grant may name only an agent its user owns (an admin may grant otherwise)",
                agent.id, agent.owner
            )));
        }
        let grant = spec
            .authorize(&actor.principal()?, now)
            .map_err(|e| match e {
                writ_identity::IdentityError::Forbidden(m) => Error::forbidden(m),
                other => Error::invalid(other.to_string()),
            })?;
        self.check_patterns(&grant.spec.actions)?;
        self.db.add_grant(&grant).await?;
        self.record(
            actor,
            AdminEvent::GrantCreated {
                grant: json!(grant),
                agent_owner: cross_owner.then(|| agent.owner.to_string()),
            },
        )
        .await?;
        self.tools_changed();
        Ok(grant)
    }

    /// Refuses a grant pattern that covers no action of the serving policy bundle's schema: it
    /// would grant nothing today, and would silently start granting whatever a later bundle names
    /// so. A grant only ever narrows what policy allows: policy decides with the agent's user as
    /// its parent, so a user cannot grant more than policy lets that user's agents do.
    fn check_patterns(&self, patterns: &[String]) -> Result<(), Error> {
        let Some(bundle) = &self.bundle else {
            return Ok(());
        };
        for p in patterns {
            if !bundle
                .actions()
                .any(|a| writ_identity::grant::action_matches(p, a))
            {
                return Err(Error::invalid(format!(
                    "action pattern {p:?} matches no action of the policy bundle's schema; name a declared action (connector.operation) or connector.*"
                )));
            }
        }
        Ok(())
    }

    /// Revokes grant `id` if the actor is its user or an admin. Returns whether this call
    /// revoked it (false when it already was).
    pub async fn revoke_grant(&self, actor: &Actor, id: &GrantId) -> Result<bool, Error> {
        let grant = self
            .db
            .grant(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("grant {id} does not exist")))?;
        if actor.user_id() != Some(&grant.grant.spec.user) && !actor.is_admin() {
            return Err(Error::forbidden(format!(
                "{} cannot revoke grant {id}: only user {} (or an admin) can revoke it",
                actor.label().replace(':', " "),
                grant.grant.spec.user
            )));
        }
        let revoked = self.db.revoke_grant(id, Timestamp::now()).await?;
        if revoked {
            self.record(
                actor,
                AdminEvent::GrantRevoked {
                    grant: id.to_string(),
                },
            )
            .await?;
        }
        self.tools_changed();
        Ok(revoked)
    }
}
