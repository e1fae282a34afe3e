//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`, so a commit is durable when
//! it returns.
//!
//! One writer thread owns the write connection and group-commits the audit log and the action
//! changes committed with it (`log.rs`, which also opens the store, since opening starts that
//! thread). Every other call runs on a pooled connection on the blocking thread pool
//! ([`SqliteStore::with_conn`]); WAL lets reads beside the writer, and the identity and session
//! writes that take their own short transactions wait for the write lock. `identity.rs`,
//! `actions.rs` and `sessions.rs` implement the other traits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use writ_core::{NewEntry, Timestamp};

use crate::actions::Change;
use crate::migrate;
use crate::sequencer::{self, AppendJob};
use crate::{AppendReceipt, StoreError};

mod actions;
mod identity;
mod log;
mod sessions;

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store. Cheap to share behind an `Arc`. [`SqliteStore::open`] opens one.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<mpsc::Sender<AppendJob>>,
    pool: Arc<Pool>,
    /// Dropping it stops the checkpointer thread.
    _stop_checkpoints: Mutex<mpsc::Sender<()>>,
}

impl SqliteStore {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands `changes` and `entries` to the writer as one job and waits for its commit.
    async fn commit_job(
        &self,
        changes: Vec<Change>,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        let Some((job, answer)) = AppendJob::prepare_with(changes, entries)? else {
            return Ok(Vec::new());
        };
        self.writer
            .lock()
            .map_err(|_| StoreError::WriterGone)?
            .send(job)
            .map_err(|_| StoreError::WriterGone)?;
        sequencer::wait(answer).await
    }

    /// Runs `f` on a pooled connection (not the writer's) on the blocking thread pool: every read,
    /// and the writes that are not committed with audit entries.
    async fn with_conn<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| StoreError::db(op, e))?
    }
}

/// A statement shared with PostgreSQL, in SQLite's spelling. Shared statements number their
/// parameters `$1`, `$2`, … as PostgreSQL does; SQLite would take `$1` for a *named* parameter
/// numbered by its first appearance, so it gets `?1`, which SQLite numbers as written.
fn sql(shared: &str) -> String {
    debug_assert!(
        shared
            .match_indices('$')
            .all(|(i, _)| shared[i + 1..].starts_with(|c: char| c.is_ascii_digit())),
        "a shared statement uses `$` only for parameters: {shared}"
    );
    shared.replace('$', "?")
}

/// Maps a database error to what went wrong during `op`.
fn db(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::db(op, e)
}

/// A write transaction that takes the write lock at once, so that it never deadlocks upgrading
/// a read lock.
fn immediate(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::db("open", format!("{}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| StoreError::db("open", e))?;
    // WAL: readers never block the writer. synchronous=FULL: every commit fsyncs the WAL, so an
    // acknowledged append survives power loss, not only a crash of this process.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| StoreError::db("open", e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| StoreError::db("open", e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| StoreError::db("open", e))?;
    Ok(conn)
}

fn run_migrations(conn: &mut Connection) -> Result<(), StoreError> {
    let op = "migrate";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::db(op, e))?;
    tx.execute_batch(migrate::CREATE_TABLE)
        .map_err(|e| StoreError::db(op, e))?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM writ_schema",
            [],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::db(op, e))?;
    for m in migrate::pending(migrate::SQLITE, current)? {
        tx.execute_batch(m.sql).map_err(|e| {
            StoreError::db(op, format!("migration {} ({}): {e}", m.version, m.name))
        })?;
        tx.execute(
            "INSERT INTO writ_schema (version, name, applied_us) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, Timestamp::now().as_micros()],
        )
        .map_err(|e| StoreError::db(op, e))?;
    }
    tx.commit().map_err(|e| StoreError::db(op, e))
}

/// Connections other than the writer's, kept for reuse.
struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    const MAX_IDLE: usize = 8;

    fn new(path: PathBuf) -> Pool {
        Pool {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .idle
            .lock()
            .map_err(|_| StoreError::db("read", "pool poisoned"))?
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.path)?,
        };
        let result = f(&conn);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < Self::MAX_IDLE
        {
            idle.push(conn);
        }
        result
    }
}
