//! The audit log on SQLite: opening the store, its writer thread and checkpointer, and the
//! [`Store`] reads.
//!
//! One writer thread owns the write connection and group-commits: it takes the first waiting
//! append, drains whatever else is queued (up to a bound), writes them all in one `BEGIN
//! IMMEDIATE` transaction, commits (one fsync of the WAL), and only then answers every caller.
//! Another process may append to the same file (the CLI beside a server): the writer checks the
//! log size inside its write lock and reloads its state when it moved.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use writ_audit::{Frontier, Hash, NodeId};
use writ_core::NewEntry;

use super::{Pool, SqliteStore, connect, db, run_migrations, sql};
use crate::columns::{to_hash, to_i64, to_u64};
use crate::log::{
    ADD_CHECKPOINT, CHECKPOINTS, ENTRIES_FROM, ENTRY_COLUMNS, ENTRY_TIME, LEAVES_BETWEEN,
    NODE_COUNT, NODES_BETWEEN, RawEntry, checkpoint_row, node_row,
};
use crate::sequencer::{self, AppendJob, Batch, LogState};
use crate::{
    AppendReceipt, Backend, EntryFilter, Store, StoreError, StoredCheckpoint, StoredEntry,
};

/// WAL pages after which the writer checkpoints by itself (the checkpointer normally has).
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// How often the checkpointer copies committed WAL pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database file at `path`, and starts its
    /// writer and checkpointer threads.
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
            pool: Arc::new(Pool::new(path.clone())),
            path,
            writer: Mutex::new(tx),
            _stop_checkpoints: Mutex::new(stop_checkpoints),
        })
    }
}

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
        let jobs = sequencer::gather(first, || rx.try_recv().ok());
        let outcome = commit_batch(&mut conn, &mut state, &jobs);
        sequencer::answer(jobs, outcome, &mut state);
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
        .map_err(db(op))?;
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
        tx.execute_batch("SAVEPOINT writ_job").map_err(db(op))?;
        match super::actions::apply(&tx, &job.changes) {
            Ok(()) => {
                tx.execute_batch("RELEASE writ_job").map_err(db(op))?;
                refused.push(None);
            }
            Err(err) => {
                tx.execute_batch("ROLLBACK TO writ_job; RELEASE writ_job")
                    .map_err(db(op))?;
                refused.push(Some(err));
            }
        }
    }
    let groups = sequencer::accepted(jobs, &refused);
    let mut batch = Batch::default();
    let receipts = current.sequence(&groups, &mut batch);
    {
        let mut insert_entry = tx
            .prepare_cached(&format!(
                "INSERT INTO audit_entries ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .map_err(db(op))?;
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
                .map_err(db(op))?;
        }
        let mut insert_node = tx
            .prepare_cached("INSERT INTO audit_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
            .map_err(db(op))?;
        for (id, hash) in &batch.nodes {
            insert_node
                .execute(params![
                    id.level,
                    to_i64(id.index, "node index")?,
                    &hash.0[..]
                ])
                .map_err(db(op))?;
        }
    }
    tx.commit().map_err(db(op))?;
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
        .map_err(db("read log size"))?;
    to_u64(size, "log size")
}

/// Rebuilds the writer's state from the O(log n) nodes on the right edge of the tree.
fn load_state(conn: &Connection, size: u64) -> Result<LogState, StoreError> {
    let found = get_nodes(conn, &Frontier::nodes_for_size(size))?;
    let last_time_us = match size {
        0 => None,
        _ => Some(
            conn.query_row(
                &sql(ENTRY_TIME),
                [to_i64(size - 1, "sequence number")?],
                |r| r.get(0),
            )
            .map_err(db("load log state"))?,
        ),
    };
    LogState::load(size, &found, last_time_us)
}

fn get_nodes(conn: &Connection, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
    let op = "read tree nodes";
    let mut leaf = conn
        .prepare_cached("SELECT leaf_hash FROM audit_entries WHERE seq = ?1")
        .map_err(db(op))?;
    let mut node = conn
        .prepare_cached("SELECT hash FROM audit_nodes WHERE level = ?1 AND idx = ?2")
        .map_err(db(op))?;
    let mut out = HashMap::with_capacity(ids.len());
    for id in ids {
        let index = to_i64(id.index, "node index")?;
        let bytes: Option<Vec<u8>> = if id.level == 0 {
            leaf.query_row([index], |r| r.get(0)).optional()
        } else {
            node.query_row(params![id.level, index], |r| r.get(0))
                .optional()
        }
        .map_err(db(op))?;
        if let Some(bytes) = bytes {
            out.insert(*id, to_hash(&bytes, "node hash")?);
        }
    }
    Ok(out)
}

fn raw_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok(RawEntry {
        seq: row.get(0)?,
        time_us: row.get(1)?,
        action_id: row.get(2)?,
        kind: row.get(3)?,
        actor: row.get(4)?,
        entry: row.get(5)?,
        leaf_hash: row.get(6)?,
    })
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
        self.with_conn("read log size", log_size).await
    }

    async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let ids = ids.to_vec();
        self.with_conn("read tree nodes", move |c| get_nodes(c, &ids))
            .await
    }

    async fn nodes_at_level(
        &self,
        level: u8,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        let op = "read tree nodes";
        let (lo, hi) = (to_i64(lo, "node index")?, to_i64(hi, "node index")?);
        self.with_conn(op, move |c| {
            let read = |r: &rusqlite::Row<'_>| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?));
            let rows = if level == 0 {
                let mut stmt = c.prepare_cached(&sql(LEAVES_BETWEEN)).map_err(db(op))?;
                stmt.query_map(params![lo, hi], read)
                    .map_err(db(op))?
                    .collect::<Result<Vec<_>, _>>()
            } else {
                let mut stmt = c.prepare_cached(&sql(NODES_BETWEEN)).map_err(db(op))?;
                stmt.query_map(params![level, lo, hi], read)
                    .map_err(db(op))?
                    .collect::<Result<Vec<_>, _>>()
            }
            .map_err(db(op))?;
            rows.iter()
                .map(|(idx, hash)| node_row(*idx, hash, level))
                .collect()
        })
        .await
    }

    async fn node_count(&self) -> Result<u64, StoreError> {
        let op = "count tree nodes";
        self.with_conn(op, move |c| {
            let n: i64 = c.query_row(NODE_COUNT, [], |r| r.get(0)).map_err(db(op))?;
            to_u64(n, "node count")
        })
        .await
    }

    async fn entries(&self, from_seq: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        let op = "read entries";
        let from = to_i64(from_seq, "sequence number")?;
        self.with_conn(op, move |c| {
            let mut stmt = c.prepare_cached(&sql(ENTRIES_FROM)).map_err(db(op))?;
            let rows = stmt
                .query_map(params![from, limit], raw_entry)
                .map_err(db(op))?;
            rows.map(|r| r.map_err(db(op))?.decode()).collect()
        })
        .await
    }

    async fn query(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        let op = "query entries";
        let filter = filter.clone();
        self.with_conn(op, move |c| {
            let mut statement = format!("SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut arg = |statement: &mut String, clause: &str, v: rusqlite::types::Value| {
                args.push(v);
                statement.push_str(&clause.replace('?', &format!("?{}", args.len())));
            };
            if let Some(a) = filter.action_id {
                arg(&mut statement, " AND action_id = ?", a.into());
            }
            if let Some(k) = filter.kind {
                arg(
                    &mut statement,
                    " AND kind = ?",
                    k.as_str().to_owned().into(),
                );
            }
            if let Some(a) = filter.actor {
                arg(&mut statement, " AND actor = ?", a.into());
            }
            if let Some(t) = filter.since {
                arg(&mut statement, " AND time_us >= ?", t.as_micros().into());
            }
            if let Some(t) = filter.until {
                arg(&mut statement, " AND time_us < ?", t.as_micros().into());
            }
            if let Some(s) = filter.after_seq {
                arg(
                    &mut statement,
                    " AND seq > ?",
                    to_i64(s, "sequence number")?.into(),
                );
            }
            arg(
                &mut statement,
                " ORDER BY seq LIMIT ?",
                i64::from(filter.limit).into(),
            );
            let mut stmt = c.prepare(&statement).map_err(db(op))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), raw_entry)
                .map_err(db(op))?;
            rows.map(|r| r.map_err(db(op))?.decode()).collect()
        })
        .await
    }

    async fn add_checkpoint(&self, cp: StoredCheckpoint) -> Result<(), StoreError> {
        let op = "store checkpoint";
        self.with_conn(op, move |c| {
            c.execute(
                &sql(ADD_CHECKPOINT),
                params![
                    to_i64(cp.tree_size, "tree size")?,
                    &cp.root_hash.0[..],
                    cp.note,
                    cp.created_us
                ],
            )
            .map_err(db(op))?;
            Ok(())
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let op = "read checkpoints";
        self.with_conn(op, move |c| {
            let mut stmt = c.prepare_cached(CHECKPOINTS).map_err(db(op))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(db(op))?;
            rows.map(|r| {
                let (size, root, note, created_us) = r.map_err(db(op))?;
                checkpoint_row(size, &root, note, created_us)
            })
            .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_conn("ping", |c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(db("ping"))?;
            Ok(())
        })
        .await
    }
}
