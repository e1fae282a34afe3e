//! Identifiers of users, agents and grants.

use serde::{Deserialize, Serialize};

use crate::IdentityError;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        id_type!($(#[$doc])* $name, $what, "");
    };
    ($(#[$doc:meta])* $name:ident, $what:literal, $extra:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = 128;

            pub fn new(value: impl Into<String>) -> Result<Self, IdentityError> {
                let value = value.into();
                // `$extra` characters are allowed on top of the usual identifier set (user ids
                // may be e-mail addresses).
                let checked: String = value
                    .chars()
                    .map(|c| if $extra.contains(c) { '.' } else { c })
                    .collect();
                writ_core::id::validate_token($what, &checked, Self::MAX_LEN)
                    .map_err(|e| IdentityError::InvalidInput(e.to_string()))?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdentityError;
            fn try_from(s: String) -> Result<Self, IdentityError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A user: a human (or service) principal on whose authority grants are issued.
    UserId,
    "user id",
    "@"
);
id_type!(
    /// A registered agent.
    AgentId,
    "agent id"
);
id_type!(
    /// A grant.
    GrantId,
    "grant id"
);

impl GrantId {
    /// A fresh, time-ordered grant id.
    pub fn generate() -> Self {
        GrantId(format!("grt_{}", uuid::Uuid::now_v7().simple()))
    }
}
