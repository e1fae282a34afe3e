//! The audit log's storage, backend-neutral: the [`Store`] trait, the rows it reads and writes,
//! and the statements both backends run alike. Appending (sequencing, leaf and node hashes) is
//! `sequencer.rs`'s; each backend's writer and reads are its `log.rs`.

use std::collections::HashMap;

use async_trait::async_trait;
use writ_audit::{Hash, NodeId, ProofPlan};
use writ_core::{AuditEntry, EntryKind, NewEntry, Timestamp};

use crate::columns::{to_hash, to_u64};
use crate::{Backend, StoreError};

/// What an append returns for each entry, once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    pub seq: u64,
    pub time: Timestamp,
    pub leaf_hash: Hash,
}

/// The size of the log and its Merkle root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    pub size: u64,
    pub root: Hash,
}

/// One row of the log as stored: the canonical bytes plus the columns kept beside them for
/// queries. Verification checks that the columns agree with the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub seq: u64,
    pub time_us: i64,
    pub action_id: String,
    pub kind: String,
    pub actor: Option<String>,
    /// The entry's RFC 8785 canonical JSON: the Merkle leaf data.
    pub entry: Vec<u8>,
    pub leaf_hash: Hash,
}

impl StoredEntry {
    /// Decodes the canonical bytes (refusing non-canonical ones).
    pub fn decode(&self) -> Result<AuditEntry, writ_core::EntryError> {
        AuditEntry::from_canonical(&self.entry)
    }
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub tree_size: u64,
    pub root_hash: Hash,
    /// The signed note (C2SP tlog-checkpoint body and signature lines).
    pub note: String,
    pub created_us: i64,
}

/// Which entries a query wants. Empty fields match everything; results are in log order.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub action_id: Option<String>,
    pub kind: Option<EntryKind>,
    pub actor: Option<String>,
    /// Inclusive lower bound on the entry time.
    pub since: Option<Timestamp>,
    /// Exclusive upper bound on the entry time.
    pub until: Option<Timestamp>,
    /// Start after this sequence number (for paging).
    pub after_seq: Option<u64>,
    pub limit: u32,
}

/// The log's storage. Both backends implement it; callers hold an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Appends `entries` as one atomic group, sharing a transaction and an fsync with whatever
    /// other appends are waiting. Returns only once the commit is durable.
    async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<AppendReceipt>, StoreError>;

    /// The number of entries in the log.
    async fn size(&self) -> Result<u64, StoreError>;

    /// Hashes of perfect subtrees (level 0 = leaf hashes). Missing ids are absent from the map.
    async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError>;

    /// Hashes of the stored nodes at `level` with `lo <= idx <= hi`, in index order.
    async fn nodes_at_level(
        &self,
        level: u8,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError>;

    /// How many node rows (level ≥ 1) are stored.
    async fn node_count(&self) -> Result<u64, StoreError>;

    /// Up to `limit` entries with `seq >= from_seq`, in order.
    async fn entries(&self, from_seq: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError>;

    async fn query(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError>;

    /// Records a signed checkpoint; a second one at the same size is ignored.
    async fn add_checkpoint(&self, checkpoint: StoredCheckpoint) -> Result<(), StoreError>;

    /// Every stored checkpoint, by tree size.
    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// Is the database reachable?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Computes the hashes a plan needs from O(log n) stored nodes.
    async fn assemble(&self, plan: &ProofPlan) -> Result<Vec<Hash>, StoreError> {
        let ids = plan.node_ids();
        let found = self.nodes(&ids).await?;
        Ok(plan.assemble(|id| found.get(&id).copied())?)
    }

    /// The Merkle root of the first `size` entries.
    async fn root_at(&self, size: u64) -> Result<Hash, StoreError> {
        let current = self.size().await?;
        if size > current {
            return Err(StoreError::InvalidRequest(format!(
                "the log has {current} entries; there is no root at size {size}"
            )));
        }
        if size == 0 {
            return Ok(writ_audit::empty_root());
        }
        let hashes = self.assemble(&writ_audit::root_plan(size)).await?;
        hashes
            .first()
            .copied()
            .ok_or_else(|| StoreError::Corrupt(format!("no root computed for size {size}")))
    }

    /// The current size and root.
    async fn tree_head(&self) -> Result<TreeHead, StoreError> {
        let size = self.size().await?;
        Ok(TreeHead {
            size,
            root: self.root_at(size).await?,
        })
    }

    /// The inclusion proof of entry `seq` in the tree of `size` entries.
    async fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        self.check_size(size).await?;
        self.assemble(&writ_audit::inclusion_plan(seq, size)?).await
    }

    /// The consistency proof between the trees of `old_size` and `new_size` entries.
    async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        self.check_size(new_size).await?;
        self.assemble(&writ_audit::consistency_plan(old_size, new_size)?)
            .await
    }

    async fn check_size(&self, size: u64) -> Result<(), StoreError> {
        let current = self.size().await?;
        if size > current {
            return Err(StoreError::InvalidRequest(format!(
                "the log has {current} entries; a proof at size {size} is not possible yet"
            )));
        }
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoints().await?.pop())
    }
}

/// The columns of `audit_entries`, in the order [`RawEntry`] lists them.
macro_rules! entry_columns {
    () => {
        "seq, time_us, action_id, kind, actor, entry, leaf_hash"
    };
}
pub(crate) const ENTRY_COLUMNS: &str = entry_columns!();

/// Up to `$2` entries from sequence number `$1` on, in order.
pub(crate) const ENTRIES_FROM: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
);

/// The time of entry `$1`: the writer's clock never goes below the last one.
pub(crate) const ENTRY_TIME: &str = "SELECT time_us FROM audit_entries WHERE seq = $1";

/// Leaf hashes (level 0 of the tree) with `$1 <= seq <= $2`, as `(idx, hash)`.
pub(crate) const LEAVES_BETWEEN: &str = "SELECT seq AS idx, leaf_hash AS hash FROM audit_entries
     WHERE seq BETWEEN $1 AND $2 ORDER BY seq";

/// Node hashes at level `$1` with `$2 <= idx <= $3`.
pub(crate) const NODES_BETWEEN: &str =
    "SELECT idx, hash FROM audit_nodes WHERE level = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx";

pub(crate) const NODE_COUNT: &str = "SELECT COUNT(*) FROM audit_nodes";

/// A second checkpoint at the same size is ignored.
pub(crate) const ADD_CHECKPOINT: &str =
    "INSERT INTO audit_checkpoints (tree_size, root_hash, note, created_us)
     VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size) DO NOTHING";

pub(crate) const CHECKPOINTS: &str =
    "SELECT tree_size, root_hash, note, created_us FROM audit_checkpoints ORDER BY tree_size";

/// The columns of a stored entry, as both backends read them.
pub(crate) struct RawEntry {
    pub seq: i64,
    pub time_us: i64,
    pub action_id: String,
    pub kind: String,
    pub actor: Option<String>,
    pub entry: Vec<u8>,
    pub leaf_hash: Vec<u8>,
}

impl RawEntry {
    pub fn decode(self) -> Result<StoredEntry, StoreError> {
        Ok(StoredEntry {
            seq: to_u64(self.seq, "sequence number")?,
            time_us: self.time_us,
            action_id: self.action_id,
            kind: self.kind,
            actor: self.actor,
            entry: self.entry,
            leaf_hash: to_hash(&self.leaf_hash, &format!("leaf hash of entry {}", self.seq))?,
        })
    }
}

/// A checkpoint from its columns (`tree_size, root_hash, note, created_us`).
pub(crate) fn checkpoint_row(
    tree_size: i64,
    root_hash: &[u8],
    note: String,
    created_us: i64,
) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        tree_size: to_u64(tree_size, "tree size")?,
        root_hash: to_hash(root_hash, "checkpoint root")?,
        note,
        created_us,
    })
}

/// A leaf or node hash from its `(idx, hash)` columns.
pub(crate) fn node_row(idx: i64, hash: &[u8], level: u8) -> Result<(u64, Hash), StoreError> {
    if level == 0 {
        Ok((to_u64(idx, "leaf index")?, to_hash(hash, "leaf hash")?))
    } else {
        Ok((to_u64(idx, "node index")?, to_hash(hash, "node hash")?))
    }
}
