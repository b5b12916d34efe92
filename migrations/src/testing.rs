//! Per-test databases: each test gets its own Postgres database (created on the real server and
//! dropped afterwards) or its own SQLite file, so tests run in parallel without sharing state.

use std::path::PathBuf;

use crate::{Db, PoolConfig};

/// The admin URL of the test Postgres; `TAVERN_TEST_POSTGRES` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("TAVERN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The URL of the test Redis; `TAVERN_TEST_REDIS` overrides it.
pub fn redis_url() -> String {
    std::env::var("TAVERN_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A database that lives for one test.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite(PathBuf),
}

impl TestDb {
    /// A fresh, migrated database on the real Postgres. Panics (failing the test) if Postgres is
    /// not reachable: these tests must not silently pass without it.
    pub async fn postgres() -> TestDb {
        use sqlx::Connection;
        let admin_url = postgres_admin_url();
        let name = format!("tavern_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("test postgres at {admin_url} is not reachable: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        let cfg = PoolConfig { max_connections: 8, ..PoolConfig::default() };
        let db = Db::open(&url, &cfg)
            .await
            .unwrap_or_else(|e| panic!("cannot open test database {url}: {e}"));
        TestDb { db, url, cleanup: Cleanup::Postgres { admin_url, name } }
    }

    /// A fresh, migrated SQLite database in a temporary file.
    pub async fn sqlite() -> TestDb {
        let path = std::env::temp_dir().join(format!("tavern_test_{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", path.display());
        let db = Db::open(&url, &PoolConfig::default())
            .await
            .unwrap_or_else(|e| panic!("cannot open test sqlite {url}: {e}"));
        TestDb { db, url, cleanup: Cleanup::Sqlite(path) }
    }

    /// Closes the pool and removes the database.
    pub async fn drop_db(self) {
        use sqlx::Connection;
        self.db.close().await;
        match self.cleanup {
            Cleanup::Postgres { admin_url, name } => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            }
            Cleanup::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

/// Runs each listed async test function (taking a [`Db`]) once on Postgres and once on SQLite:
/// `both_backends!(registers_user, rejects_duplicate);` inside a test file.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = $crate::testing::TestDb::postgres().await;
                    super::$name(t.db.clone()).await;
                    t.drop_db().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = $crate::testing::TestDb::sqlite().await;
                    super::$name(t.db.clone()).await;
                    t.drop_db().await;
                }
            )*
        }
    };
}
