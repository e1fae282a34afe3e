//! Writ's storage: everything Writ keeps, in one database, behind four traits with two
//! backends, SQLite (the embedded default) and PostgreSQL. Storage only: it keeps rows and the
//! append-only Merkle audit log, and applies each state change with the entries that record it;
//! what a grant allows, who may sign in and what an entry means are decided above it
//! (`writ-identity`, `writ-gateway`).
//!
//! An append stores each entry's canonical bytes, its leaf hash, and the hash of every perfect
//! subtree the entry completes, so that the root of any size and every inclusion or consistency
//! proof read O(log n) rows and never rescan the log. Appends are *group-committed*: one writer
//! per process gathers the appends waiting at that moment into one transaction and one fsync, and
//! answers each caller only after that commit is durable. The log has no update or delete path in
//! code, and triggers refuse UPDATE and DELETE in the database.
//!
//! This crate is the I/O shell around the pure crates: `writ-core` says what an entry is and
//! `writ-audit` does the tree math.
//!
//! Modules, backend-neutral first (traits, rows, and the statements and decisions both backends
//! share), then one folder per backend with a file per trait:
//! - `log`: the audit log's [`Store`] trait and rows;
//! - [`identity`]: [`IdentityStore`]: users, agents, API-key hashes, grants and their budgets,
//!   sealed credentials, assertion `jti`s, password hashes and failure counts;
//! - [`actions`]: [`ActionStore`]: actions, approvals and decisions, and the [`Change`]s committed
//!   with their entries;
//! - [`sessions`]: [`SessionStore`]: console sessions and pending OIDC sign-ins;
//! - `sequencer`: the group commit's shared part: sequence numbers, times, leaf and node hashes;
//! - `columns`: conversions between values and the columns both backends store;
//! - `migrate`: the schema migrations of both backends, by version;
//! - [`verify`]: [`verify_log`], full verification of a stored log, apart from the writer;
//! - [`sqlite`]: [`sqlite::SqliteStore`]: `mod.rs` (connections), `log.rs` (opening, the writer
//!   thread, the log), `identity.rs`, `actions.rs`, `sessions.rs`;
//! - [`postgres`]: [`postgres::PgStore`], laid out the same way.

use std::path::Path;
use std::sync::Arc;

pub mod actions;
mod columns;
pub mod identity;
mod log;
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
pub use log::{AppendReceipt, EntryFilter, Store, StoredCheckpoint, StoredEntry, TreeHead};
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
