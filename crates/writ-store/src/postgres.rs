//! The PostgreSQL backend, for deployments that share one database between several `writ`
//! processes.
//!
//! Like the SQLite backend, each process runs one writer task that group-commits the appends
//! waiting at that moment in one transaction (one WAL flush). Each batch takes a transaction-level
//! advisory lock on the log and checks the log size under it, so that several processes can
//! append to one database without ever racing for a sequence number: the lock serialises the
//! batches, and a writer whose view is stale reloads its O(log n) tree state.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use tokio::sync::mpsc;
use writ_audit::{Frontier, Hash, NodeId};
use writ_core::{NewEntry, Timestamp};

use crate::migrate;
use crate::sequencer::{
    self, AppendJob, Batch, LogState, MAX_BATCH_ENTRIES, to_hash, to_i64, to_u64,
};
use crate::{
    AppendReceipt, Backend, EntryFilter, Store, StoreError, StoredCheckpoint, StoredEntry,
};

/// The lock that serialises appends across processes (per schema).
const LOG_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.writ_audit_log'))";

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    writer: mpsc::UnboundedSender<AppendJob>,
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL; `?options=-c search_path=SCHEMA` selects a schema)
    /// and migrates the schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::db("parse database URL", redact(url, e)))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::db("connect to PostgreSQL", e))?;
        run_migrations(&pool).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer_loop(pool.clone(), rx));
        Ok(PgStore { pool, writer: tx })
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
        self.writer.send(job).map_err(|_| StoreError::WriterGone)?;
        sequencer::wait(answer).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// An error message about a URL that never repeats the URL (it may hold a password).
fn redact(_url: &str, err: impl std::fmt::Display) -> String {
    format!("{err} (URL not shown: it may contain a password)")
}

async fn run_migrations(pool: &PgPool) -> Result<(), StoreError> {
    let op = "migrate";
    let mut conn = pool.acquire().await.map_err(|e| StoreError::db(op, e))?;
    let mut tx = conn.begin().await.map_err(|e| StoreError::db(op, e))?;
    // Replicas starting together must not migrate twice.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.writ_migrate'))")
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::db(op, e))?;
    sqlx::query(migrate::CREATE_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::db(op, e))?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM writ_schema")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(op, e))?;
    for m in migrate::pending(migrate::POSTGRES, current)? {
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|e| {
            StoreError::db(op, format!("migration {} ({}): {e}", m.version, m.name))
        })?;
        sqlx::query("INSERT INTO writ_schema (version, name, applied_us) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(Timestamp::now().as_micros())
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(op, e))?;
    }
    tx.commit().await.map_err(|e| StoreError::db(op, e))
}

async fn writer_loop(pool: PgPool, mut rx: mpsc::UnboundedReceiver<AppendJob>) {
    let mut state: Option<LogState> = None;
    while let Some(first) = rx.recv().await {
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
        match commit_batch(&pool, &mut state, &jobs).await {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(err) => {
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

async fn commit_batch(
    pool: &PgPool,
    state: &mut Option<LogState>,
    jobs: &[AppendJob],
) -> Result<Vec<Result<Vec<AppendReceipt>, StoreError>>, StoreError> {
    let op = "append";
    let mut tx = pool.begin().await.map_err(|e| StoreError::db(op, e))?;
    sqlx::query(LOG_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::db(op, e))?;
    let size = log_size(&mut tx).await?;
    let mut current = match state.take() {
        Some(s) if s.frontier.size() == size => s,
        _ => load_state(&mut tx, size).await?,
    };
    // Each job's state changes apply under a savepoint: a refused change undoes only its job.
    let mut refused = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.changes.is_empty() {
            refused.push(None);
            continue;
        }
        sqlx::query("SAVEPOINT writ_job")
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(op, e))?;
        match crate::actions_postgres::apply(&mut tx, &job.changes).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT writ_job")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(op, e))?;
                refused.push(None);
            }
            Err(err) => {
                sqlx::query("ROLLBACK TO SAVEPOINT writ_job")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(op, e))?;
                refused.push(Some(err));
            }
        }
    }
    let groups = sequencer::accepted(jobs, &refused);
    let mut batch = Batch::default();
    let receipts = current.sequence(&groups, &mut batch);

    // Each statement stays well below the socket's initial send buffer. sqlx 0.9.0 does not set
    // TCP_NODELAY (sqlx issue #4335): a message written in two parts waits on the server's delayed
    // ACK, 40 ms per statement: 64 writers appended 1,100/s before this and 4,300/s after.
    for chunk in statement_chunks(&batch.entries) {
        insert_entries(&mut tx, chunk).await?;
    }
    // About 60 bytes per node on the wire: 128 nodes stay under the same bound.
    for chunk in batch.nodes.chunks(128) {
        let mut levels = Vec::with_capacity(chunk.len());
        let mut idxs = Vec::with_capacity(chunk.len());
        let mut hashes = Vec::with_capacity(chunk.len());
        for (id, hash) in chunk {
            levels.push(i16::from(id.level));
            idxs.push(to_i64(id.index, "node index")?);
            hashes.push(&hash.0[..]);
        }
        sqlx::query(
            "INSERT INTO audit_nodes (level, idx, hash)
             SELECT * FROM UNNEST($1::SMALLINT[], $2::BIGINT[], $3::BYTEA[])",
        )
        .bind(levels)
        .bind(idxs)
        .bind(hashes)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::db(op, e))?;
    }
    tx.commit().await.map_err(|e| StoreError::db(op, e))?;
    *state = Some(current);
    Ok(sequencer::job_results(refused, receipts))
}

/// Bytes of entry data per INSERT statement (see `commit_batch`).
const STATEMENT_BYTES: usize = 8 * 1024;

/// Splits entries into runs of about [`STATEMENT_BYTES`] (at least one entry per run).
fn statement_chunks(entries: &[StoredEntry]) -> Vec<&[StoredEntry]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let size = e.entry.len() + e.action_id.len() + e.kind.len() + 64;
        if i > start && bytes + size > STATEMENT_BYTES {
            chunks.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < entries.len() {
        chunks.push(&entries[start..]);
    }
    chunks
}

async fn insert_entries(
    tx: &mut sqlx::PgConnection,
    entries: &[StoredEntry],
) -> Result<(), StoreError> {
    let op = "append";
    let n = entries.len();
    let (mut seqs, mut times, mut actions, mut kinds, mut actors, mut bodies, mut leaves) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in entries {
        seqs.push(to_i64(e.seq, "sequence number")?);
        times.push(e.time_us);
        actions.push(e.action_id.as_str());
        kinds.push(e.kind.as_str());
        actors.push(e.actor.as_deref());
        bodies.push(e.entry.as_slice());
        leaves.push(&e.leaf_hash.0[..]);
    }
    sqlx::query(
        "INSERT INTO audit_entries (seq, time_us, action_id, kind, actor, entry, leaf_hash)
         SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BYTEA[], $7::BYTEA[])",
    )
    .bind(seqs)
    .bind(times)
    .bind(actions)
    .bind(kinds)
    .bind(actors)
    .bind(bodies)
    .bind(leaves)
    .execute(tx)
    .await
    .map_err(|e| StoreError::db(op, e))?;
    Ok(())
}

async fn log_size(conn: &mut sqlx::PgConnection) -> Result<u64, StoreError> {
    let size: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0)::BIGINT FROM audit_entries")
            .fetch_one(conn)
            .await
            .map_err(|e| StoreError::db("read log size", e))?;
    to_u64(size, "log size")
}

async fn load_state(conn: &mut sqlx::PgConnection, size: u64) -> Result<LogState, StoreError> {
    let ids = Frontier::nodes_for_size(size);
    let found = get_nodes(&mut *conn, &ids).await?;
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
        let micros: i64 = sqlx::query_scalar("SELECT time_us FROM audit_entries WHERE seq = $1")
            .bind(to_i64(size - 1, "sequence number")?)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| StoreError::db("load log state", e))?;
        Timestamp::from_micros(micros)
            .map_err(|e| StoreError::Corrupt(format!("entry {}: time {micros}: {e}", size - 1)))?
    };
    Ok(LogState {
        frontier,
        last_time,
    })
}

/// Fetches node hashes in one round trip: leaves from the entries table, the rest from nodes.
async fn get_nodes(
    conn: &mut sqlx::PgConnection,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, StoreError> {
    let op = "read tree nodes";
    let mut levels = Vec::with_capacity(ids.len());
    let mut idxs = Vec::with_capacity(ids.len());
    for id in ids {
        levels.push(i16::from(id.level));
        idxs.push(to_i64(id.index, "node index")?);
    }
    let rows = sqlx::query(
        "SELECT w.level, w.idx, COALESCE(e.leaf_hash, n.hash) AS hash
         FROM UNNEST($1::SMALLINT[], $2::BIGINT[]) AS w(level, idx)
         LEFT JOIN audit_entries e ON w.level = 0 AND e.seq = w.idx
         LEFT JOIN audit_nodes n ON w.level > 0 AND n.level = w.level AND n.idx = w.idx",
    )
    .bind(levels)
    .bind(idxs)
    .fetch_all(conn)
    .await
    .map_err(|e| StoreError::db(op, e))?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let level: i16 = row.try_get(0).map_err(|e| StoreError::db(op, e))?;
        let idx: i64 = row.try_get(1).map_err(|e| StoreError::db(op, e))?;
        let hash: Option<Vec<u8>> = row.try_get(2).map_err(|e| StoreError::db(op, e))?;
        if let Some(hash) = hash {
            let level = u8::try_from(level)
                .map_err(|_| StoreError::Corrupt(format!("node level {level}")))?;
            out.insert(
                NodeId {
                    level,
                    index: to_u64(idx, "node index")?,
                },
                to_hash(&hash, "node hash")?,
            );
        }
    }
    Ok(out)
}

fn row_to_stored(row: &sqlx::postgres::PgRow) -> Result<StoredEntry, StoreError> {
    let op = "read entries";
    let seq: i64 = row.try_get("seq").map_err(|e| StoreError::db(op, e))?;
    let leaf: Vec<u8> = row
        .try_get("leaf_hash")
        .map_err(|e| StoreError::db(op, e))?;
    Ok(StoredEntry {
        seq: to_u64(seq, "sequence number")?,
        time_us: row.try_get("time_us").map_err(|e| StoreError::db(op, e))?,
        action_id: row
            .try_get("action_id")
            .map_err(|e| StoreError::db(op, e))?,
        kind: row.try_get("kind").map_err(|e| StoreError::db(op, e))?,
        actor: row.try_get("actor").map_err(|e| StoreError::db(op, e))?,
        entry: row.try_get("entry").map_err(|e| StoreError::db(op, e))?,
        leaf_hash: to_hash(&leaf, &format!("leaf hash of entry {seq}"))?,
    })
}

const ENTRY_COLUMNS: &str = "seq, time_us, action_id, kind, actor, entry, leaf_hash";

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<AppendReceipt>, StoreError> {
        self.commit_job(Vec::new(), entries).await
    }

    async fn size(&self) -> Result<u64, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| StoreError::db("read log size", e))?;
        log_size(&mut conn).await
    }

    async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| StoreError::db("read tree nodes", e))?;
        get_nodes(&mut conn, ids).await
    }

    async fn nodes_at_level(
        &self,
        level: u8,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        let op = "read tree nodes";
        let (lo, hi) = (to_i64(lo, "node index")?, to_i64(hi, "node index")?);
        let rows = if level == 0 {
            sqlx::query("SELECT seq AS idx, leaf_hash AS hash FROM audit_entries WHERE seq BETWEEN $1 AND $2 ORDER BY seq")
                .bind(lo)
                .bind(hi)
                .fetch_all(&self.pool)
                .await
        } else {
            sqlx::query("SELECT idx, hash FROM audit_nodes WHERE level = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx")
                .bind(i16::from(level))
                .bind(lo)
                .bind(hi)
                .fetch_all(&self.pool)
                .await
        }
        .map_err(|e| StoreError::db(op, e))?;
        rows.iter()
            .map(|row| {
                let idx: i64 = row.try_get("idx").map_err(|e| StoreError::db(op, e))?;
                let hash: Vec<u8> = row.try_get("hash").map_err(|e| StoreError::db(op, e))?;
                Ok((to_u64(idx, "node index")?, to_hash(&hash, "node hash")?))
            })
            .collect()
    }

    async fn node_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_nodes")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::db("count tree nodes", e))?;
        to_u64(n, "node count")
    }

    async fn entries(&self, from_seq: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        // Only constant column names are interpolated; values are bound.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
        )))
        .bind(to_i64(from_seq, "sequence number")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db("read entries", e))?;
        rows.iter().map(row_to_stored).collect()
    }

    async fn query(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        let mut qb = sqlx::QueryBuilder::new(format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE TRUE"
        ));
        if let Some(a) = &filter.action_id {
            qb.push(" AND action_id = ").push_bind(a.clone());
        }
        if let Some(k) = filter.kind {
            qb.push(" AND kind = ").push_bind(k.as_str());
        }
        if let Some(a) = &filter.actor {
            qb.push(" AND actor = ").push_bind(a.clone());
        }
        if let Some(t) = filter.since {
            qb.push(" AND time_us >= ").push_bind(t.as_micros());
        }
        if let Some(t) = filter.until {
            qb.push(" AND time_us < ").push_bind(t.as_micros());
        }
        if let Some(s) = filter.after_seq {
            qb.push(" AND seq > ")
                .push_bind(to_i64(s, "sequence number")?);
        }
        qb.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::db("query entries", e))?;
        rows.iter().map(row_to_stored).collect()
    }

    async fn add_checkpoint(&self, cp: StoredCheckpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (tree_size, root_hash, note, created_us)
             VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size) DO NOTHING",
        )
        .bind(to_i64(cp.tree_size, "tree size")?)
        .bind(cp.root_hash.0.to_vec())
        .bind(cp.note)
        .bind(cp.created_us)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db("store checkpoint", e))?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let op = "read checkpoints";
        let rows = sqlx::query("SELECT tree_size, root_hash, note, created_us FROM audit_checkpoints ORDER BY tree_size")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::db(op, e))?;
        rows.iter()
            .map(|row| {
                let size: i64 = row.try_get(0).map_err(|e| StoreError::db(op, e))?;
                let root: Vec<u8> = row.try_get(1).map_err(|e| StoreError::db(op, e))?;
                Ok(StoredCheckpoint {
                    tree_size: to_u64(size, "tree size")?,
                    root_hash: to_hash(&root, "checkpoint root")?,
                    note: row.try_get(2).map_err(|e| StoreError::db(op, e))?,
                    created_us: row.try_get(3).map_err(|e| StoreError::db(op, e))?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::db("ping", e))?;
        Ok(())
    }
}

/// Creates `schema` (if absent) and returns `url` with its `search_path` set to it: how tests and
/// benchmarks get a private, disposable log inside a shared database.
pub async fn url_with_fresh_schema(url: &str, schema: &str) -> Result<String, StoreError> {
    validate_schema(schema)?;
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| StoreError::db("parse database URL", redact(url, e)))?;
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .map_err(|e| StoreError::db("connect to PostgreSQL", e))?;
    // The schema name was checked above to be letters, digits and `_` only.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| StoreError::db("create schema", e))?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

/// Drops a schema made by [`url_with_fresh_schema`] and everything in it.
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    validate_schema(schema)?;
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| StoreError::db("parse database URL", redact(url, e)))?;
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .map_err(|e| StoreError::db("connect to PostgreSQL", e))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| StoreError::db("drop schema", e))?;
    Ok(())
}

fn validate_schema(schema: &str) -> Result<(), StoreError> {
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(StoreError::InvalidRequest(format!(
            "schema name {schema:?}: use letters, digits and _"
        )));
    }
    Ok(())
}
