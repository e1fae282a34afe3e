//! The PostgreSQL backend, for deployments that share one database between several `writ`
//! processes.
//!
//! Like the SQLite backend, each process runs one writer task that group-commits the appends
//! waiting at that moment, and the action changes committed with them, in one transaction (one
//! WAL flush): `log.rs`, which also connects the store, since connecting starts that task. Every
//! other call runs on the pool. `identity.rs`, `actions.rs` and `sessions.rs` implement the
//! other traits.

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool};
use tokio::sync::mpsc;
use writ_core::{NewEntry, Timestamp};

use crate::actions::Change;
use crate::migrate;
use crate::sequencer::{self, AppendJob};
use crate::{AppendReceipt, StoreError};

mod actions;
mod identity;
mod log;
mod sessions;

/// The PostgreSQL store. [`PgStore::connect`] opens one.
pub struct PgStore {
    pool: PgPool,
    writer: mpsc::UnboundedSender<AppendJob>,
}

impl PgStore {
    /// Hands `changes` and `entries` to the writer as one job and waits for its commit.
    async fn commit_job(
        &self,
        changes: Vec<Change>,
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

/// Maps a database error to what went wrong during `op`.
fn db(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::db(op, e)
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
