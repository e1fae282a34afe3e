//! Identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} {value:?} contains {bad:?}; allowed are letters, digits and . _ : -")]
    BadCharacter {
        what: &'static str,
        value: String,
        bad: char,
    },
}

/// The identifier of one action: every audit entry of the action carries it.
///
/// Writ generates `act_` followed by a time-ordered UUIDv7 (so ids sort by creation time); callers
/// that append their own entries may use any id of 1 to 128 characters from `[A-Za-z0-9._:-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ActionId(String);

impl ActionId {
    pub const MAX_LEN: usize = 128;

    /// A fresh, time-ordered action id.
    pub fn generate() -> Self {
        ActionId(format!("act_{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        validate_token("action id", &value, Self::MAX_LEN)?;
        Ok(ActionId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks an identifier-like token: non-empty, bounded, `[A-Za-z0-9._:-]` only.
pub fn validate_token(what: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > max {
        return Err(IdError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(IdError::BadCharacter {
            what,
            value: value.to_owned(),
            bad,
        });
    }
    Ok(())
}

impl FromStr for ActionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        ActionId::new(s)
    }
}

impl<'de> Deserialize<'de> for ActionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ActionId::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_ordered() {
        let a = ActionId::generate();
        let b = ActionId::generate();
        assert!(a.as_str().starts_with("act_"));
        assert_eq!(ActionId::new(a.as_str()).unwrap(), a);
        assert!(a < b, "{a} should sort before {b}");
    }

    #[test]
    fn validation() {
        let cases: &[(&str, Option<&str>)] = &[
            ("act_1", None),
            ("a.b:c-d_e", None),
            ("", Some("must not be empty")),
            ("has space", Some("contains ' '")),
            ("é", Some("contains 'é'")),
            ("x\n", Some("contains '\\n'")),
        ];
        for (input, err) in cases {
            match (ActionId::new(*input), err) {
                (Ok(_), None) => {}
                (Err(e), Some(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
                (got, want) => panic!("{input:?}: got {got:?}, wanted error {want:?}"),
            }
        }
        assert!(ActionId::new("a".repeat(128)).is_ok());
        assert!(matches!(
            ActionId::new("a".repeat(129)),
            Err(IdError::TooLong { .. })
        ));
        assert!(serde_json::from_str::<ActionId>("\"bad id\"").is_err());
    }
}
