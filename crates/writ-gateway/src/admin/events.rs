//! The vocabulary of `admin` entries: every change to identity, the vault, policy or sessions is
//! recorded as one of these events, whichever face made it (API, console, local CLI), so that
//! one fact is always recorded with the same words. Payloads name users, agents, grants and
//! credentials (`name@version`) only, never a secret, a key or a password.

use serde::Serialize;
use serde_json::Value;

/// One `admin` entry's payload, `{"event": "<name>", …}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event")]
pub enum AdminEvent {
    #[serde(rename = "user.created")]
    UserCreated {
        user: String,
        admin: bool,
        groups: Vec<String>,
        /// The API key issued with the user, if one was.
        #[serde(skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
    },
    #[serde(rename = "user.password_set")]
    PasswordSet { user: String },
    #[serde(rename = "user.password_cleared")]
    PasswordCleared { user: String, cleared: bool },
    #[serde(rename = "user.sessions_ended")]
    SessionsEnded { user: String, count: u64 },
    #[serde(rename = "agent.created")]
    AgentCreated {
        agent: String,
        owner: String,
        /// `api_key` or `public_key`.
        credential: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
    },
    #[serde(rename = "agent.disabled")]
    AgentDisabled { agent: String },
    #[serde(rename = "agent.enabled")]
    AgentEnabled { agent: String },
    #[serde(rename = "agent.key_rotated")]
    AgentKeyRotated {
        agent: String,
        revoked_api_keys: u64,
        /// The new API key's id, or none when a public key replaced the credential.
        #[serde(skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
    },
    #[serde(rename = "grant.created")]
    GrantCreated {
        /// The grant as issued (its spec, who created it, when).
        grant: Value,
        /// Set when an admin lent a user's authority to an agent that user does not own.
        #[serde(skip_serializing_if = "Option::is_none")]
        agent_owner: Option<String>,
    },
    #[serde(rename = "grant.revoked")]
    GrantRevoked { grant: String },
    #[serde(rename = "credential.stored")]
    CredentialStored {
        credential: String,
        scope: Value,
        master_key_id: String,
    },
    #[serde(rename = "credential.rotated")]
    CredentialRotated {
        credential: String,
        scope: Value,
        master_key_id: String,
    },
    #[serde(rename = "credential.retired")]
    CredentialRetired { credential: String, scope: Value },
    #[serde(rename = "policy.reloaded")]
    PolicyReloaded { from: String, to: String },
    #[serde(rename = "policy.reload_refused")]
    PolicyReloadRefused { serving: String, error: String },
    #[serde(rename = "token.issued")]
    TokenIssued {
        jti: String,
        user: String,
        agent: String,
        /// The token's `authorization_details`.
        grant: Value,
        exp: i64,
    },
}

impl AdminEvent {
    /// The payload of the entry.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The event's name, as the entry's `event` field holds it.
    pub fn name(&self) -> String {
        self.payload()
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_their_names() {
        let e = AdminEvent::AgentKeyRotated {
            agent: "bot".into(),
            revoked_api_keys: 2,
            key_id: None,
        };
        assert_eq!(
            e.payload(),
            serde_json::json!({"event": "agent.key_rotated", "agent": "bot", "revoked_api_keys": 2})
        );
        assert_eq!(e.name(), "agent.key_rotated");
    }
}
