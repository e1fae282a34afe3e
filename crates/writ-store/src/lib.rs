//! Writ's storage: one [`Store`] trait with two backends, SQLite (the embedded default) and
//! PostgreSQL, holding the append-only Merkle audit log.
//!
//! An append stores each entry's canonical bytes, its leaf hash, and the hash of every perfect
//! subtree the entry completes, so that the root of any size and every inclusion or consistency
//! proof read O(log n) rows and never rescan the log. Appends are *group-committed*: one writer
//! per process gathers the appends waiting at that moment into one transaction and one fsync, and
//! answers each caller only after that commit is durable. The log has no update or delete path in
//! code, and triggers refuse UPDATE and DELETE in the database.
//!
//! This crate is the I/O shell around the pure crates: `writ-core` says what an entry is and
//! `writ-audit` does the tree math; nothing here decides what an entry means.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use writ_audit::{Hash, NodeId, ProofPlan};
use writ_core::{AuditEntry, EntryKind, NewEntry, Timestamp};

pub mod actions;
mod actions_postgres;
mod actions_sqlite;
pub mod identity;
mod identity_postgres;
mod identity_sqlite;
mod migrate;
pub mod postgres;
mod sequencer;
pub mod sessions;
pub mod sqlite;
pub mod verify;

pub use actions::{
    ActionFilter, ActionRow, ActionState, ActionStore, ApprovalRow, ApprovalState, Change,
    Decision, DecisionRow,
};
pub use identity::IdentityStore;
pub use sessions::{SessionRecord, SessionStore};
pub use verify::{VerifyError, VerifyOptions, VerifyReport, verify_log};

/// What went wrong in the store. Messages say which operation and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid entry: {0}")]
    Entry(#[from] writ_core::EntryError),
    #[error("database error during {op}: {message}")]
    Database { op: &'static str, message: String },
    #[error(
        "the database schema is at version {found}, newer than this build of Writ knows ({known}); upgrade Writ"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("{0}")]
    Proof(#[from] writ_audit::AuditError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the store's writer has stopped; restart Writ (see the log for the cause)")]
    WriterGone,
    #[error("the stored log is inconsistent: {0}; run `writ audit verify`")]
    Corrupt(String),
    /// Holds only the URL's scheme: the rest may contain a password.
    #[error(
        "unsupported database URL (scheme {0:?}; the URL is not shown, it may hold a password): use sqlite://PATH or postgres://USER@HOST/DB"
    )]
    BadUrl(String),
    #[error("cannot use data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Users and agents share one namespace: `name` is already held by a principal of `holder`'s
    /// kind (`user` or `agent`).
    #[error(
        "the name {name} is already taken by a{n} {holder}; users and agents share one namespace, choose another name",
        n = if holder.starts_with('a') { "n" } else { "" }
    )]
    NameTaken { name: String, holder: &'static str },
    #[error("{0}")]
    Conflict(String),
    /// A `SpendGrant` found the grant revoked, expired or its budget spent: told apart from a
    /// [`StoreError::Conflict`] on another change of the same commit, so that a caller can record
    /// a denial rather than a lost race.
    #[error("{0}")]
    GrantRefused(String),
}

impl StoreError {
    /// The error for an unusable database URL, naming only its scheme.
    pub fn bad_url(url: &str) -> Self {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        let scheme = if scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            scheme
        } else {
            ""
        };
        StoreError::BadUrl(scheme.to_owned())
    }

    pub(crate) fn db(op: &'static str, err: impl std::fmt::Display) -> Self {
        StoreError::Database {
            op,
            message: err.to_string(),
        }
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

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

/// The file name of the embedded database inside the data directory.
pub const SQLITE_FILE: &str = "writ.db";

/// Everything Writ stores, in one database: the audit log, identity, actions and approvals,
/// console sessions.
pub trait Database: Store + IdentityStore + ActionStore + SessionStore {}

impl<T: Store + IdentityStore + ActionStore + SessionStore> Database for T {}

/// Opens the database named by `database_url`, or the embedded SQLite database in `data_dir`
/// when there is none, creating and migrating it as needed.
pub async fn open_database(
    database_url: Option<&str>,
    data_dir: &Path,
) -> Result<Arc<dyn Database>, StoreError> {
    match database_url {
        None => {
            ensure_data_dir(data_dir)?;
            Ok(Arc::new(
                sqlite::SqliteStore::open(&data_dir.join(SQLITE_FILE)).await?,
            ))
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(postgres::PgStore::connect(url).await?))
        }
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => {
                let path = Path::new(path);
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    ensure_data_dir(parent)?;
                }
                Ok(Arc::new(sqlite::SqliteStore::open(path).await?))
            }
            _ => Err(StoreError::bad_url(url)),
        },
    }
}

/// Opens the audit log of the database `open_database` would open.
pub async fn open(
    database_url: Option<&str>,
    data_dir: &Path,
) -> Result<Arc<dyn Store>, StoreError> {
    let db: Arc<dyn Database> = open_database(database_url, data_dir).await?;
    Ok(db)
}

/// Creates the data directory (mode 0700 on Unix) if it does not exist.
pub fn ensure_data_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |e: std::io::Error| StoreError::DataDir {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(err)
}
