//! Test harness: the same tests run on a SQLite file and, when `WRIT_TEST_POSTGRES_URL` is set,
//! on a private schema of a real PostgreSQL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use writ_core::{ActionId, EntryKind, NewEntry};
use writ_store::Store;

pub enum Kind {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        base_url: String,
        url: String,
        schema: String,
    },
}

pub struct Db {
    pub store: Arc<dyn Store>,
    pub kind: Kind,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL URL for tests, or None with the reason printed. Under CI a missing URL is a
/// failure, not a skip.
pub fn postgres_url() -> Option<String> {
    match std::env::var("WRIT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI is set but WRIT_TEST_POSTGRES_URL is not: PostgreSQL tests must run in CI"
            );
            eprintln!("skipping the PostgreSQL variant: WRIT_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

impl Db {
    pub async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("writ.db");
        let store = Arc::new(writ_store::sqlite::SqliteStore::open(&path).await.unwrap());
        Db {
            store,
            kind: Kind::Sqlite { path },
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Option<Db> {
        let base_url = postgres_url()?;
        let schema = format!("writ_test_{}", uuid::Uuid::now_v7().simple());
        let url = writ_store::postgres::url_with_fresh_schema(&base_url, &schema)
            .await
            .expect("PostgreSQL at WRIT_TEST_POSTGRES_URL is unreachable");
        let store = Arc::new(writ_store::postgres::PgStore::connect(&url).await.unwrap());
        Some(Db {
            store,
            kind: Kind::Postgres {
                base_url,
                url,
                schema,
            },
            _dir: None,
        })
    }

    pub fn url(&self) -> String {
        match &self.kind {
            Kind::Sqlite { path } => format!("sqlite://{}", path.display()),
            Kind::Postgres { url, .. } => url.clone(),
        }
    }

    /// A new store on the same database, with no state cached from before.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.kind {
            Kind::Sqlite { path } => {
                Arc::new(writ_store::sqlite::SqliteStore::open(path).await.unwrap())
            }
            Kind::Postgres { url, .. } => {
                Arc::new(writ_store::postgres::PgStore::connect(url).await.unwrap())
            }
        }
    }

    /// Runs SQL directly against the database, as someone with database access would.
    pub async fn exec(&self, sql: &str) -> Result<(), String> {
        match &self.kind {
            Kind::Sqlite { path } => {
                let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                conn.execute_batch(sql).map_err(|e| e.to_string())
            }
            Kind::Postgres { url, .. } => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// A literal for a byte string in this database's SQL.
    pub fn blob(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self.kind {
            Kind::Sqlite { .. } => format!("X'{hex}'"),
            Kind::Postgres { .. } => format!("decode('{hex}', 'hex')"),
        }
    }

    /// Removes the append-only triggers, as an attacker with administrative access could.
    pub async fn drop_protection(&self) {
        let sql = match self.kind {
            Kind::Sqlite { .. } => {
                let mut s = String::new();
                for t in ["audit_entries", "audit_nodes", "audit_checkpoints"] {
                    s.push_str(&format!(
                        "DROP TRIGGER {t}_no_update; DROP TRIGGER {t}_no_delete;"
                    ));
                }
                s
            }
            Kind::Postgres { .. } => {
                let mut s = String::new();
                for t in ["audit_entries", "audit_nodes", "audit_checkpoints"] {
                    s.push_str(&format!(
                        "DROP TRIGGER {t}_append_only ON {t}; DROP TRIGGER {t}_no_truncate ON {t};"
                    ));
                }
                s
            }
        };
        self.exec(&sql).await.unwrap();
    }

    pub async fn cleanup(self) {
        if let Kind::Postgres {
            base_url, schema, ..
        } = &self.kind
        {
            drop(self.store);
            writ_store::postgres::drop_schema(base_url, schema)
                .await
                .unwrap();
        }
    }
}

pub fn entry(i: u64) -> NewEntry {
    NewEntry::new(
        ActionId::new(format!("act_{i}")).unwrap(),
        EntryKind::ALL[(i % 7) as usize],
        if i.is_multiple_of(3) {
            None
        } else {
            Some(format!("agent:bot-{}", i % 4))
        },
        json!({"i": i, "note": "payload ü", "args": {"amount": i * 10}}),
    )
    .unwrap()
}

/// Runs an async test body on SQLite and on PostgreSQL (when configured).
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::common::Db::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::common::Db::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    };
}
