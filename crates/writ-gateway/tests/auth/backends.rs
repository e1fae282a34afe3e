//! The same tests on a SQLite file and, when `WRIT_TEST_POSTGRES_URL` is set, on a private
//! schema of a real PostgreSQL (the harness of `writ-store`'s tests, as much as these need).

use std::path::PathBuf;

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

/// A fresh, migrated database; [`Db::open`] gives as many store instances on it as a test wants
/// (each one is another replica, with nothing cached from the others).
pub struct Db {
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
        writ_store::sqlite::SqliteStore::open(&path).await.unwrap();
        Db {
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
        writ_store::postgres::PgStore::connect(&url).await.unwrap();
        Some(Db {
            kind: Kind::Postgres {
                base_url,
                url,
                schema,
            },
            _dir: None,
        })
    }

    pub async fn cleanup(self) {
        if let Kind::Postgres {
            base_url, schema, ..
        } = &self.kind
        {
            writ_store::postgres::drop_schema(base_url, schema)
                .await
                .unwrap();
        }
    }
}

/// Runs an async test body on SQLite and on PostgreSQL (when configured).
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::backends::Db::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::backends::Db::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    };
}
