//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`, so a commit is durable when
//! it returns.
//!
//! One writer thread owns the write connection and group-commits: it takes the first waiting
//! append, drains whatever else is queued (up to a bound), writes them all in one `BEGIN
//! IMMEDIATE` transaction, commits (one fsync of the WAL), and only then answers every caller.
//! Reads use a small pool of other connections on the blocking thread pool; WAL lets them run
//! beside the writer. Another process may append to the same file (the CLI beside a server): the
//! writer checks the log size inside its write lock and reloads its state when it moved.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use writ_audit::{Frontier, Hash, NodeId};
use writ_core::{NewEntry, Timestamp};

use crate::migrate;
use crate::sequencer::{
    self, AppendJob, Batch, LogState, MAX_BATCH_ENTRIES, to_hash, to_i64, to_u64,
};
use crate::{
    AppendReceipt, Backend, EntryFilter, Store, StoreError, StoredCheckpoint, StoredEntry,
};

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<mpsc::Sender<AppendJob>>,
    readers: Arc<ReadPool>,
    /// Dropping it stops the checkpointer thread.
    _stop_checkpoints: Mutex<mpsc::Sender<()>>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let open_path = path.clone();
        let (conn, checkpoint_conn) = tokio::task::spawn_blocking(move || {
            let mut conn = connect(&open_path)?;
            run_migrations(&mut conn)?;
            let checkpoint_conn = connect(&open_path)?;
            Ok::<_, StoreError>((conn, checkpoint_conn))
        })
        .await
        .map_err(|e| StoreError::db("open", e))??;
        // The WAL is copied back into the database by a thread of its own, so that the writer's
        // commits do not wait for checkpoints. The writer still checkpoints if the WAL grows past
        // WRITER_CHECKPOINT_PAGES, in case the checkpointer cannot keep up.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .map_err(|e| StoreError::db("open", e))?;
        let (stop_checkpoints, stopped) = mpsc::channel();
        std::thread::Builder::new()
            .name("writ-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stopped))
            .map_err(|e| StoreError::db("start checkpoint thread", e))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("writ-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::db("start writer thread", e))?;
        Ok(SqliteStore {
            readers: Arc::new(ReadPool {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            path,
            writer: Mutex::new(tx),
            _stop_checkpoints: Mutex::new(stop_checkpoints),
        })
    }

    /// Hands `changes` and `entries` to the writer as one job and waits for its commit.
    pub(crate) async fn commit_job(
        &self,
        changes: Vec<crate::actions::Change>,
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn read<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| StoreError::db(op, e))?
    }
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

/// WAL pages after which the writer checkpoints by itself (the checkpointer normally has).
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// How often the checkpointer copies committed WAL pages into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs passive checkpoints (they never block the writer or readers) until the store is dropped.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "WAL checkpoint failed; the writer will checkpoint instead");
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<AppendJob>) {
    let mut state: Option<LogState> = None;
    while let Ok(first) = rx.recv() {
        let mut queued = first.entries.len();
        let mut jobs = vec![first];
        while queued < MAX_BATCH_ENTRIES {
            match rx.try_recv() {
                Ok(job) => {
                    queued += job.entries.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        match commit_batch(&mut conn, &mut state, &jobs) {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(err) => {
                // The in-memory state may be ahead of the database: reload it next time.
                state = None;
                tracing::error!(error = %err, "audit append failed; nothing of this batch was committed");
                let message = err.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Database {
                        op: "append",
                        message: message.clone(),
                    }));
                }
            }
        }
    }
}

fn commit_batch(
    conn: &mut Connection,
    state: &mut Option<LogState>,
    jobs: &[AppendJob],
) -> Result<Vec<Result<Vec<AppendReceipt>, StoreError>>, StoreError> {
    let op = "append";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::db(op, e))?;
    let size = log_size(&tx)?;
    let mut current = match state.take() {
        Some(s) if s.frontier.size() == size => s,
        _ => load_state(&tx, size)?,
    };
    // Each job's state changes apply under a savepoint: a refused change undoes only its job.
    let mut refused = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.changes.is_empty() {
            refused.push(None);
            continue;
        }
        tx.execute_batch("SAVEPOINT writ_job")
            .map_err(|e| StoreError::db(op, e))?;
        match crate::actions_sqlite::apply(&tx, &job.changes) {
            Ok(()) => {
                tx.execute_batch("RELEASE writ_job")
                    .map_err(|e| StoreError::db(op, e))?;
                refused.push(None);
            }
            Err(err) => {
                tx.execute_batch("ROLLBACK TO writ_job; RELEASE writ_job")
                    .map_err(|e| StoreError::db(op, e))?;
                refused.push(Some(err));
            }
        }
    }
    let groups = sequencer::accepted(jobs, &refused);
    let mut batch = Batch::default();
    let receipts = current.sequence(&groups, &mut batch);
    {
        let mut insert_entry = tx
            .prepare_cached(
                "INSERT INTO audit_entries (seq, time_us, action_id, kind, actor, entry, leaf_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(|e| StoreError::db(op, e))?;
        for e in &batch.entries {
            insert_entry
                .execute(params![
                    to_i64(e.seq, "sequence number")?,
                    e.time_us,
                    e.action_id,
                    e.kind,
                    e.actor,
                    e.entry,
                    &e.leaf_hash.0[..],
                ])
                .map_err(|e| StoreError::db(op, e))?;
        }
        let mut insert_node = tx
            .prepare_cached("INSERT INTO audit_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
            .map_err(|e| StoreError::db(op, e))?;
        for (id, hash) in &batch.nodes {
            insert_node
                .execute(params![
                    id.level,
                    to_i64(id.index, "node index")?,
                    &hash.0[..]
                ])
                .map_err(|e| StoreError::db(op, e))?;
        }
    }
    tx.commit().map_err(|e| StoreError::db(op, e))?;
    *state = Some(current);
    Ok(sequencer::job_results(refused, receipts))
}

fn log_size(conn: &Connection) -> Result<u64, StoreError> {
    let size: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_entries",
            [],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::db("read log size", e))?;
    to_u64(size, "log size")
}

/// Rebuilds the writer's state from the O(log n) nodes on the right edge of the tree.
fn load_state(conn: &Connection, size: u64) -> Result<LogState, StoreError> {
    let ids = Frontier::nodes_for_size(size);
    let found = get_nodes(conn, &ids)?;
    let hashes = ids
        .iter()
        .map(|id| {
            found.get(id).copied().ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "node level {} index {} is missing",
                    id.level, id.index
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let frontier = Frontier::from_nodes(size, hashes)?;
    let last_time = if size == 0 {
        Timestamp::UNIX_EPOCH
    } else {
        let micros: i64 = conn
            .query_row(
                "SELECT time_us FROM audit_entries WHERE seq = ?1",
                [to_i64(size - 1, "sequence number")?],
                |r| r.get(0),
            )
            .map_err(|e| StoreError::db("load log state", e))?;
        Timestamp::from_micros(micros)
            .map_err(|e| StoreError::Corrupt(format!("entry {}: time {micros}: {e}", size - 1)))?
    };
    Ok(LogState {
        frontier,
        last_time,
    })
}

fn get_nodes(conn: &Connection, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
    let op = "read tree nodes";
    let mut leaf = conn
        .prepare_cached("SELECT leaf_hash FROM audit_entries WHERE seq = ?1")
        .map_err(|e| StoreError::db(op, e))?;
    let mut node = conn
        .prepare_cached("SELECT hash FROM audit_nodes WHERE level = ?1 AND idx = ?2")
        .map_err(|e| StoreError::db(op, e))?;
    let mut out = HashMap::with_capacity(ids.len());
    for id in ids {
        let index = to_i64(id.index, "node index")?;
        let bytes: Option<Vec<u8>> = if id.level == 0 {
            leaf.query_row([index], |r| r.get(0)).optional()
        } else {
            node.query_row(params![id.level, index], |r| r.get(0))
                .optional()
        }
        .map_err(|e| StoreError::db(op, e))?;
        if let Some(bytes) = bytes {
            out.insert(*id, to_hash(&bytes, "node hash")?);
        }
    }
    Ok(out)
}

fn row_to_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

type RawEntry = (i64, i64, String, String, Option<String>, Vec<u8>, Vec<u8>);

fn raw_to_stored(raw: RawEntry) -> Result<StoredEntry, StoreError> {
    let (seq, time_us, action_id, kind, actor, entry, leaf) = raw;
    Ok(StoredEntry {
        seq: to_u64(seq, "sequence number")?,
        time_us,
        action_id,
        kind,
        actor,
        entry,
        leaf_hash: to_hash(&leaf, &format!("leaf hash of entry {seq}"))?,
    })
}

const ENTRY_COLUMNS: &str = "seq, time_us, action_id, kind, actor, entry, leaf_hash";

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    const MAX_IDLE: usize = 8;

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

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<AppendReceipt>, StoreError> {
        self.commit_job(Vec::new(), entries).await
    }

    async fn size(&self) -> Result<u64, StoreError> {
        self.read("read log size", log_size).await
    }

    async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let ids = ids.to_vec();
        self.read("read tree nodes", move |c| get_nodes(c, &ids))
            .await
    }

    async fn nodes_at_level(
        &self,
        level: u8,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        let (lo, hi) = (to_i64(lo, "node index")?, to_i64(hi, "node index")?);
        self.read("read tree nodes", move |c| {
            let op = "read tree nodes";
            let mut out = Vec::new();
            if level == 0 {
                let mut stmt = c
                    .prepare_cached("SELECT seq, leaf_hash FROM audit_entries WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq")
                    .map_err(|e| StoreError::db(op, e))?;
                let rows = stmt.query_map([lo, hi], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)));
                for row in rows.map_err(|e| StoreError::db(op, e))? {
                    let (idx, hash) = row.map_err(|e| StoreError::db(op, e))?;
                    out.push((to_u64(idx, "leaf index")?, to_hash(&hash, "leaf hash")?));
                }
            } else {
                let mut stmt = c
                    .prepare_cached("SELECT idx, hash FROM audit_nodes WHERE level = ?1 AND idx BETWEEN ?2 AND ?3 ORDER BY idx")
                    .map_err(|e| StoreError::db(op, e))?;
                let rows = stmt.query_map(params![level, lo, hi], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)));
                for row in rows.map_err(|e| StoreError::db(op, e))? {
                    let (idx, hash) = row.map_err(|e| StoreError::db(op, e))?;
                    out.push((to_u64(idx, "node index")?, to_hash(&hash, "node hash")?));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn node_count(&self) -> Result<u64, StoreError> {
        self.read("count tree nodes", |c| {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM audit_nodes", [], |r| r.get(0))
                .map_err(|e| StoreError::db("count tree nodes", e))?;
            to_u64(n, "node count")
        })
        .await
    }

    async fn entries(&self, from_seq: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        let from = to_i64(from_seq, "sequence number")?;
        self.read("read entries", move |c| {
            let op = "read entries";
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
                ))
                .map_err(|e| StoreError::db(op, e))?;
            let rows = stmt.query_map(params![from, limit], row_to_entry).map_err(|e| StoreError::db(op, e))?;
            rows.map(|r| raw_to_stored(r.map_err(|e| StoreError::db(op, e))?)).collect()
        })
        .await
    }

    async fn query(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        let filter = filter.clone();
        self.read("query entries", move |c| {
            let op = "query entries";
            let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
                args.push(v);
                sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
            };
            if let Some(a) = filter.action_id {
                arg(&mut sql, " AND action_id = ?", a.into());
            }
            if let Some(k) = filter.kind {
                arg(&mut sql, " AND kind = ?", k.as_str().to_owned().into());
            }
            if let Some(a) = filter.actor {
                arg(&mut sql, " AND actor = ?", a.into());
            }
            if let Some(t) = filter.since {
                arg(&mut sql, " AND time_us >= ?", t.as_micros().into());
            }
            if let Some(t) = filter.until {
                arg(&mut sql, " AND time_us < ?", t.as_micros().into());
            }
            if let Some(s) = filter.after_seq {
                arg(
                    &mut sql,
                    " AND seq > ?",
                    to_i64(s, "sequence number")?.into(),
                );
            }
            arg(
                &mut sql,
                " ORDER BY seq LIMIT ?",
                i64::from(filter.limit).into(),
            );
            let mut stmt = c.prepare(&sql).map_err(|e| StoreError::db(op, e))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), row_to_entry)
                .map_err(|e| StoreError::db(op, e))?;
            rows.map(|r| raw_to_stored(r.map_err(|e| StoreError::db(op, e))?))
                .collect()
        })
        .await
    }

    async fn add_checkpoint(&self, cp: StoredCheckpoint) -> Result<(), StoreError> {
        self.read("store checkpoint", move |c| {
            c.execute(
                "INSERT INTO audit_checkpoints (tree_size, root_hash, note, created_us)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tree_size) DO NOTHING",
                params![
                    to_i64(cp.tree_size, "tree size")?,
                    &cp.root_hash.0[..],
                    cp.note,
                    cp.created_us
                ],
            )
            .map_err(|e| StoreError::db("store checkpoint", e))?;
            Ok(())
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.read("read checkpoints", |c| {
            let op = "read checkpoints";
            let mut stmt = c
                .prepare_cached("SELECT tree_size, root_hash, note, created_us FROM audit_checkpoints ORDER BY tree_size")
                .map_err(|e| StoreError::db(op, e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
                })
                .map_err(|e| StoreError::db(op, e))?;
            rows.map(|r| {
                let (size, root, note, created_us) = r.map_err(|e| StoreError::db(op, e))?;
                Ok(StoredCheckpoint {
                    tree_size: to_u64(size, "tree size")?,
                    root_hash: to_hash(&root, "checkpoint root")?,
                    note,
                    created_us,
                })
            })
            .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(|e| StoreError::db("ping", e))?;
            Ok(())
        })
        .await
    }
}
