//! Credential names, references (`name@version`) and the version lifecycle.

use serde::{Deserialize, Serialize};

use crate::VaultError;

/// A credential's name: 1–64 characters `a–z 0–9 . _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CredentialName(String);

impl CredentialName {
    pub fn new(name: impl Into<String>) -> Result<Self, VaultError> {
        let name = name.into();
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(CredentialName(name))
        } else {
            Err(VaultError::InvalidName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CredentialName {
    type Error = VaultError;
    fn try_from(s: String) -> Result<Self, VaultError> {
        Self::new(s)
    }
}

impl From<CredentialName> for String {
    fn from(n: CredentialName) -> String {
        n.0
    }
}

impl std::fmt::Display for CredentialName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whose credential it is: a shared service account, or one user's own connection to a system
/// (so that "executed with" can be the user's own account).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "user")]
pub enum CredentialScope {
    Shared,
    User(String),
}

impl CredentialScope {
    /// A per-user scope; the user id follows the same rules as Writ's user ids.
    pub fn user(id: impl Into<String>) -> Result<Self, VaultError> {
        let id = id.into();
        let ok = (1..=128).contains(&id.len())
            && id.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':')
            });
        if ok {
            Ok(CredentialScope::User(id))
        } else {
            Err(VaultError::InvalidOwner(id))
        }
    }

    /// The owner column as stored: empty for shared.
    pub fn owner_key(&self) -> &str {
        match self {
            CredentialScope::Shared => "",
            CredentialScope::User(u) => u,
        }
    }

    pub fn from_owner_key(owner: &str) -> Result<Self, VaultError> {
        if owner.is_empty() {
            Ok(CredentialScope::Shared)
        } else {
            Self::user(owner)
        }
    }
}

/// How a credential is named outside the vault: `name@version`, plus whose it is. This is all
/// that audit entries, errors and responses ever say about a credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CredentialRef {
    pub name: CredentialName,
    pub version: u32,
    pub scope: CredentialScope,
}

impl std::fmt::Display for CredentialRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)?;
        if let CredentialScope::User(u) = &self.scope {
            write!(f, " (for user {u})")?;
        }
        Ok(())
    }
}

/// The life of one version. Only the newest version is `Current`; rotation moves it to
/// `Previous`, which stays readable (so in-flight work finishes) until it is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    Current,
    Previous,
    Retired,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Current => "current",
            VersionState::Previous => "previous",
            VersionState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "current" => Some(VersionState::Current),
            "previous" => Some(VersionState::Previous),
            "retired" => Some(VersionState::Retired),
            _ => None,
        }
    }
}

/// Which version a read gets, given every `(version, state)` of the credential: the current one
/// when none is asked for, else the one asked for unless it is retired.
pub fn choose_version(
    name: &CredentialName,
    versions: &[(u32, VersionState)],
    requested: Option<u32>,
) -> Result<u32, VaultError> {
    match requested {
        None => versions
            .iter()
            .find(|(_, s)| *s == VersionState::Current)
            .map(|(v, _)| *v)
            .ok_or_else(|| {
                VaultError::Lifecycle(format!(
                    "credential {name} has no current version; store one with `writ vault put {name}`"
                ))
            }),
        Some(v) => match versions.iter().find(|(n, _)| *n == v) {
            None => Err(VaultError::Lifecycle(format!(
                "credential {name}@{v} does not exist"
            ))),
            Some((_, VersionState::Retired)) => Err(VaultError::Lifecycle(format!(
                "credential {name}@{v} is retired and can no longer be read"
            ))),
            Some(_) => Ok(v),
        },
    }
}

/// Whether `version` may be retired: it must exist, not be retired already, and not be the
/// current version (rotate first, so that there is always a readable version).
pub fn check_retire(
    name: &CredentialName,
    versions: &[(u32, VersionState)],
    version: u32,
) -> Result<(), VaultError> {
    match versions.iter().find(|(n, _)| *n == version) {
        None => Err(VaultError::Lifecycle(format!(
            "credential {name}@{version} does not exist"
        ))),
        Some((_, VersionState::Retired)) => Err(VaultError::Lifecycle(format!(
            "credential {name}@{version} is already retired"
        ))),
        Some((_, VersionState::Current)) => Err(VaultError::Lifecycle(format!(
            "credential {name}@{version} is the current version; rotate it (`writ vault rotate {name}`) before retiring it"
        ))),
        Some((_, VersionState::Previous)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["github", "smtp.relay", "a", "x-1_y.z", &"a".repeat(64)] {
            assert!(CredentialName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "GitHub",
            "-x",
            ".x",
            "a b",
            "a/b",
            "a@1",
            "é",
            &"a".repeat(65),
        ] {
            assert!(CredentialName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reference_display_is_name_at_version() {
        let r = CredentialRef {
            name: CredentialName::new("github").unwrap(),
            version: 3,
            scope: CredentialScope::Shared,
        };
        assert_eq!(r.to_string(), "github@3");
        let r = CredentialRef {
            scope: CredentialScope::user("alice").unwrap(),
            ..r
        };
        assert_eq!(r.to_string(), "github@3 (for user alice)");
    }

    #[test]
    fn version_choice_and_retirement() {
        use VersionState::*;
        let n = CredentialName::new("db").unwrap();
        let v = [(1, Retired), (2, Previous), (3, Current)];
        assert_eq!(choose_version(&n, &v, None).unwrap(), 3);
        assert_eq!(choose_version(&n, &v, Some(2)).unwrap(), 2);
        assert!(
            choose_version(&n, &v, Some(1))
                .unwrap_err()
                .to_string()
                .contains("retired")
        );
        assert!(choose_version(&n, &v, Some(9)).is_err());
        assert!(choose_version(&n, &[], None).is_err());
        assert!(check_retire(&n, &v, 2).is_ok());
        assert!(
            check_retire(&n, &v, 3)
                .unwrap_err()
                .to_string()
                .contains("rotate")
        );
        assert!(check_retire(&n, &v, 1).is_err());
        assert!(check_retire(&n, &v, 4).is_err());
    }
}
