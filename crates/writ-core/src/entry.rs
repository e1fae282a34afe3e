//! The audit entry: one step of one action, as it is committed to the Merkle log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{self, CanonicalError};
use crate::id::{ActionId, IdError};
use crate::time::Timestamp;

/// The largest canonical entry Writ accepts, in bytes. Evidence should be compact; large
/// responses belong in a referenced object, not inline in the log.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// The step of an action that an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The agent asked for the action (intent, arguments, identities).
    Requested,
    /// Policy evaluated it (verdict, determining policies, bundle version).
    Evaluated,
    /// Policy asked for human approval.
    ApprovalRequested,
    /// An approver decided.
    ApprovalDecided,
    /// A connector executed it (credential reference, outcome).
    Executed,
    /// Writ answered the agent.
    Responded,
    /// An administrative event (key rotation, policy reload, grant change, ...).
    Admin,
}

impl EntryKind {
    pub const ALL: [EntryKind; 7] = [
        EntryKind::Requested,
        EntryKind::Evaluated,
        EntryKind::ApprovalRequested,
        EntryKind::ApprovalDecided,
        EntryKind::Executed,
        EntryKind::Responded,
        EntryKind::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Requested => "requested",
            EntryKind::Evaluated => "evaluated",
            EntryKind::ApprovalRequested => "approval_requested",
            EntryKind::ApprovalDecided => "approval_decided",
            EntryKind::Executed => "executed",
            EntryKind::Responded => "responded",
            EntryKind::Admin => "admin",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntryKind {
    type Err = EntryError;
    fn from_str(s: &str) -> Result<Self, EntryError> {
        EntryKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| EntryError::UnknownKind(s.to_owned()))
    }
}

/// Why an entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error(
        "unknown entry kind {0:?}; expected one of requested, evaluated, approval_requested, approval_decided, executed, responded, admin"
    )]
    UnknownKind(String),
    #[error("{0}")]
    Id(#[from] IdError),
    #[error("actor {0:?} is invalid: it must be 1 to 256 characters without control characters")]
    BadActor(String),
    #[error("{0}")]
    Canonical(#[from] CanonicalError),
    #[error("entry is {0} bytes in canonical form; the limit is {MAX_ENTRY_BYTES}")]
    TooLarge(usize),
    #[error("not a valid entry: {0}")]
    Shape(String),
    #[error("stored bytes are not in canonical form")]
    NotCanonical,
}

/// An entry before the log has given it a sequence number and time: what a writer submits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntry {
    pub action_id: ActionId,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub payload: Value,
}

impl NewEntry {
    /// Builds an entry, validating the actor and that the payload has a canonical form.
    pub fn new(
        action_id: ActionId,
        kind: EntryKind,
        actor: Option<String>,
        payload: Value,
    ) -> Result<Self, EntryError> {
        let entry = NewEntry {
            action_id,
            kind,
            actor,
            payload,
        };
        entry.validate()?;
        Ok(entry)
    }

    /// Parses one JSON object `{"action_id", "kind", "payload", "actor"?}` strictly (no
    /// duplicate or unknown keys, no inexact integers) and validates it.
    pub fn from_json(text: &str) -> Result<Self, EntryError> {
        let value = canonical::parse_strict(text)?;
        let entry: NewEntry =
            serde_json::from_value(value).map_err(|e| EntryError::Shape(e.to_string()))?;
        entry.validate()?;
        Ok(entry)
    }

    fn validate(&self) -> Result<(), EntryError> {
        if let Some(actor) = &self.actor
            && (actor.is_empty()
                || actor.chars().count() > 256
                || actor.chars().any(char::is_control))
        {
            return Err(EntryError::BadActor(actor.clone()));
        }
        canonical::canonicalize(&self.payload)?;
        Ok(())
    }

    /// The sequenced entry this becomes at `seq` and `time`.
    pub fn sequence(self, seq: u64, time: Timestamp) -> AuditEntry {
        AuditEntry {
            seq,
            time,
            action_id: self.action_id,
            kind: self.kind,
            actor: self.actor,
            payload: self.payload,
        }
    }
}

impl NewEntry {
    /// Canonicalises everything but the sequence number and time, so that the log's single
    /// writer only has to append those two fields and hash.
    ///
    /// This relies on RFC 8785 member order: `action_id < actor < kind < payload < seq < time`, so
    /// `seq` and `time` are always the last two members. A test pins the equivalence with
    /// [`AuditEntry::canonical_bytes`].
    pub fn prepare(self) -> Result<PreparedEntry, EntryError> {
        self.validate()?;
        let mut head = serde_json::Map::new();
        head.insert(
            "action_id".into(),
            Value::String(self.action_id.as_str().to_owned()),
        );
        if let Some(actor) = &self.actor {
            head.insert("actor".into(), Value::String(actor.clone()));
        }
        head.insert("kind".into(), Value::String(self.kind.as_str().to_owned()));
        head.insert("payload".into(), self.payload.clone());
        let mut prefix = canonical::canonicalize(&Value::Object(head))?;
        prefix.pop(); // the closing brace
        prefix.push_str(",\"seq\":");
        // seq (≤ 20 digits) + time (27 characters) + punctuation.
        let len = prefix.len() + 60;
        if len > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(len));
        }
        Ok(PreparedEntry {
            entry: self,
            prefix,
        })
    }
}

/// A validated entry whose canonical bytes only lack the sequence number and time.
#[derive(Clone, Debug)]
pub struct PreparedEntry {
    entry: NewEntry,
    prefix: String,
}

impl PreparedEntry {
    pub fn entry(&self) -> &NewEntry {
        &self.entry
    }

    /// The canonical bytes of this entry once sequenced at `seq` and `time`.
    pub fn canonical_bytes(&self, seq: u64, time: Timestamp) -> Vec<u8> {
        use std::fmt::Write;
        let mut out = String::with_capacity(self.prefix.len() + 48);
        out.push_str(&self.prefix);
        // Writing into a String cannot fail.
        let _ = write!(out, "{seq},\"time\":\"{time}\"}}");
        out.into_bytes()
    }

    pub fn into_entry(self, seq: u64, time: Timestamp) -> AuditEntry {
        self.entry.sequence(seq, time)
    }
}

/// The top-level fields of a stored entry, checked by [`AuditEntry::check_canonical`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader<'a> {
    pub seq: u64,
    pub time: Timestamp,
    pub action_id: ActionId,
    pub kind: EntryKind,
    pub actor: Option<String>,
    _bytes: std::marker::PhantomData<&'a [u8]>,
}

/// One committed step of one action. Its Merkle leaf is [`AuditEntry::canonical_bytes`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 0; equal to the entry's Merkle leaf index.
    pub seq: u64,
    /// When the log sequenced the entry (non-decreasing along the log).
    pub time: Timestamp,
    pub action_id: ActionId,
    pub kind: EntryKind,
    /// Who caused this step (`user:alice`, `agent:deploy-bot`, `system`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub payload: Value,
}

impl AuditEntry {
    /// The RFC 8785 canonical JSON of the entry: the exact bytes of its Merkle leaf.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EntryError> {
        let value = serde_json::to_value(self).map_err(|e| EntryError::Shape(e.to_string()))?;
        let text = canonical::canonicalize(&value)?;
        if text.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(text.len()));
        }
        Ok(text.into_bytes())
    }

    /// Checks stored bytes without decoding the payload: they must be exactly the canonical form
    /// of a valid entry. Returns the fields a verifier compares with the stored columns. Agrees
    /// with [`AuditEntry::from_canonical`] on what it accepts, at a fraction of the cost.
    pub fn check_canonical(bytes: &[u8]) -> Result<EntryHeader<'_>, EntryError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw<'a> {
            seq: u64,
            #[serde(borrow)]
            time: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            action_id: std::borrow::Cow<'a, str>,
            kind: EntryKind,
            #[serde(default, borrow)]
            actor: Option<std::borrow::Cow<'a, str>>,
            #[allow(dead_code)]
            payload: serde::de::IgnoredAny,
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| EntryError::Shape(format!("not UTF-8: {e}")))?;
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        canonical::check_canonical(text).map_err(|_| EntryError::NotCanonical)?;
        let raw: Raw<'_> =
            serde_json::from_str(text).map_err(|e| EntryError::Shape(e.to_string()))?;
        let time = Timestamp::parse(&raw.time).map_err(|e| EntryError::Shape(e.to_string()))?;
        if time.to_string() != raw.time {
            return Err(EntryError::NotCanonical);
        }
        let action_id = ActionId::new(raw.action_id.into_owned())?;
        if let Some(actor) = &raw.actor
            && (actor.is_empty()
                || actor.chars().count() > 256
                || actor.chars().any(char::is_control))
        {
            return Err(EntryError::BadActor(actor.to_string()));
        }
        Ok(EntryHeader {
            seq: raw.seq,
            time,
            action_id,
            kind: raw.kind,
            actor: raw.actor.map(std::borrow::Cow::into_owned),
            _bytes: std::marker::PhantomData,
        })
    }

    /// Reads an entry back from its stored canonical bytes, refusing bytes that are not exactly
    /// the canonical form of the entry they decode to.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, EntryError> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| EntryError::Shape(format!("not UTF-8: {e}")))?;
        let value = canonical::parse_strict(text)?;
        let entry: AuditEntry =
            serde_json::from_value(value).map_err(|e| EntryError::Shape(e.to_string()))?;
        if entry.canonical_bytes()? != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> AuditEntry {
        NewEntry::new(
            ActionId::new("act_1").unwrap(),
            EntryKind::ApprovalDecided,
            Some("user:alice".into()),
            json!({"z": 1.50, "a": ["€", null]}),
        )
        .unwrap()
        .sequence(7, Timestamp::parse("2026-11-24T10:00:00.25Z").unwrap())
    }

    #[test]
    fn canonical_bytes_are_pinned() {
        let bytes = entry().canonical_bytes().unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"action_id":"act_1","actor":"user:alice","kind":"approval_decided","payload":{"a":["€",null],"z":1.5},"seq":7,"time":"2026-11-24T10:00:00.250000Z"}"#
        );
        assert_eq!(AuditEntry::from_canonical(&bytes).unwrap(), entry());
    }

    #[test]
    fn header_check_agrees_with_full_decode() {
        let good = entry().canonical_bytes().unwrap();
        let text = String::from_utf8(good.clone()).unwrap();
        let header = AuditEntry::check_canonical(&good).unwrap();
        assert_eq!(
            (header.seq, header.kind, header.actor.as_deref()),
            (7, EntryKind::ApprovalDecided, Some("user:alice"))
        );
        let variants = [
            text.clone(),
            text.replace("1.5", "1.50"),
            text.replace(".250000Z", ".25Z"),
            text.replace("\"seq\":7", "\"seq\":7,\"zzz\":1"),
            text.replace("act_1", "act 1"),
            text.replace("approval_decided", "approved"),
            text.replace("\"actor\":\"user:alice\",", ""),
            text.replace("\"payload\":{\"a\":[\"€\",null],\"z\":1.5},", ""),
            text.replace(
                "2026-11-24T10:00:00.250000Z",
                "2026-11-24T10:00:00.250000+00:00",
            ),
        ];
        for v in variants {
            let full = AuditEntry::from_canonical(v.as_bytes()).is_ok();
            let fast = AuditEntry::check_canonical(v.as_bytes()).is_ok();
            assert_eq!(full, fast, "{v}");
        }
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let bytes = entry().canonical_bytes().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let variants = [
            text.replace("1.5", "1.50"),
            text.replace("\"seq\":7", "\"seq\":7 "),
            text.replace(".250000Z", ".25Z"),
            format!(" {text}"),
        ];
        for v in variants {
            assert!(AuditEntry::from_canonical(v.as_bytes()).is_err(), "{v}");
        }
        let extra = text.replace("\"seq\":7", "\"seq\":7,\"extra\":1");
        assert!(matches!(
            AuditEntry::from_canonical(extra.as_bytes()),
            Err(EntryError::Shape(_))
        ));
    }

    #[test]
    fn new_entry_from_json_lines() {
        let ok = NewEntry::from_json(r#"{"action_id":"a1","kind":"requested","payload":{"x":1}}"#)
            .unwrap();
        assert_eq!(ok.kind, EntryKind::Requested);
        assert_eq!(ok.actor, None);
        let cases: &[(&str, &str)] = &[
            (
                r#"{"action_id":"a1","kind":"nope","payload":1}"#,
                "unknown variant `nope`",
            ),
            (
                r#"{"action_id":"a 1","kind":"admin","payload":1}"#,
                "contains ' '",
            ),
            (
                r#"{"action_id":"a1","kind":"admin"}"#,
                "missing field `payload`",
            ),
            (
                r#"{"action_id":"a1","kind":"admin","payload":1,"seq":3}"#,
                "unknown field `seq`",
            ),
            (
                r#"{"action_id":"a1","kind":"admin","payload":1,"payload":2}"#,
                "duplicate object key",
            ),
            (
                r#"{"action_id":"a1","kind":"admin","payload":12345678901234567890}"#,
                "exactly",
            ),
            (
                r#"{"action_id":"a1","kind":"admin","payload":1,"actor":""}"#,
                "actor \"\" is invalid",
            ),
            (r#"[1]"#, "invalid type"),
            (r#"{"action_id":"a1""#, "invalid JSON"),
        ];
        for (line, fragment) in cases {
            let err = NewEntry::from_json(line).unwrap_err().to_string();
            assert!(err.contains(fragment), "{line}: {err:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for kind in EntryKind::ALL {
            assert_eq!(kind.as_str().parse::<EntryKind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        assert!("Requested".parse::<EntryKind>().is_err());
    }

    #[test]
    fn prepared_bytes_equal_canonical_bytes() {
        let time = Timestamp::parse("2026-11-24T10:00:00.25Z").unwrap();
        let payloads = [
            json!(null),
            json!({"b": [1, 2.5, "\u{1F600}"], "a": {}}),
            json!("x"),
        ];
        for actor in [None, Some("agent:bot".to_owned())] {
            for payload in &payloads {
                for seq in [0, 7, 9_007_199_254_740_991] {
                    let new = NewEntry::new(
                        ActionId::new("act_2").unwrap(),
                        EntryKind::Executed,
                        actor.clone(),
                        payload.clone(),
                    )
                    .unwrap();
                    let prepared = new.clone().prepare().unwrap();
                    let expected = new.sequence(seq, time).canonical_bytes().unwrap();
                    assert_eq!(prepared.canonical_bytes(seq, time), expected);
                }
            }
        }
    }

    #[test]
    fn oversized_entries_are_refused() {
        let mut e = entry();
        e.payload = json!("x".repeat(MAX_ENTRY_BYTES));
        assert!(matches!(e.canonical_bytes(), Err(EntryError::TooLarge(_))));
    }
}
