//! The cryptography of Writ's tamper-evident audit log, with no I/O:
//!
//! - RFC 9162 Merkle tree hashing, roots of any size, inclusion and consistency proofs
//!   (generation as plans over stored subtrees, and verification);
//! - the [`Frontier`] a single writer keeps to append in O(log n) memory;
//! - C2SP `tlog-checkpoint` checkpoints signed as C2SP signed notes with Ed25519, in the key text
//!   forms of the Go `sumdb/note` package.
//!
//! Modules: `hash` (leaf and node hashing, the `Hash` type), `tree` (roots, proof plans over
//! stored subtrees, the `Frontier`), `verify` (inclusion and consistency proofs checked),
//! `checkpoint` (the C2SP checkpoint body), `note` (signed notes, Ed25519 keys in Go's text forms).

mod checkpoint;
mod hash;
mod note;
mod tree;
mod verify;

pub use checkpoint::{Checkpoint, open_checkpoint, sign_checkpoint};
pub use hash::{Hash, empty_root, leaf_hash, node_hash};
pub use note::{MAX_SIGNATURES, NoteSigner, NoteVerifier, is_valid_key_name, open_note, sign_note};
pub use tree::{
    Frontier, MemoryTree, NodeId, ProofPlan, consistency_plan, inclusion_plan, root_plan,
};
pub use verify::{ProofError, verify_consistency, verify_inclusion};

/// Errors of proof planning, keys, notes and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("node level {} index {} is not available", .0.level, .0.index)]
    MissingNode(NodeId),
    #[error("invalid hash: {0}")]
    BadHash(String),
    #[error("invalid key: {0}")]
    Key(String),
    #[error("malformed note: {0}")]
    Note(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
}
