//! The vocabulary every other Writ crate speaks: identifiers, timestamps, the audit entry, and
//! RFC 8785 canonical JSON.
//!
//! This crate is pure: no I/O, no async runtime, no database. It defines what an audit entry *is*
//! and the exact bytes that enter the Merkle tree (an entry's canonical JSON), so that the writer
//! (`writ-store`) and every verifier agree on them without sharing any other code.
//!
//! Modules: `canonical` (RFC 8785 canonical JSON, strict parsing), `entry` (the `AuditEntry`, its
//! kinds, `NewEntry` prepared for the writer), `id` (identifiers such as `ActionId` and the token
//! rules ids follow), `time` (`Timestamp`: RFC 3339 UTC with microseconds).

pub mod canonical;
pub mod entry;
pub mod id;
pub mod time;

pub use canonical::{
    CanonicalError, canonicalize, canonicalize_str, check_canonical, parse_strict,
};
pub use entry::{
    AuditEntry, EntryError, EntryHeader, EntryKind, MAX_ENTRY_BYTES, NewEntry, PreparedEntry,
};
pub use id::{ActionId, IdError};
pub use time::{Timestamp, TimestampError};
