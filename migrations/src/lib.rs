//! The database schema of every Tavern service and the pool that stores are built on.
//!
//! Layout:
//! - `postgres/` and `sqlite/` beside this crate hold the SQL migrations of the two dialects, one
//!   file per step with the same number in both; they are embedded at compile time.
//! - [`Db`] is an open, migrated pool of either dialect. Stores match on it and keep the two SQL
//!   texts side by side where the dialects differ.
//! - [`testing`] (feature `testing`) gives each test its own database on the real Postgres or a
//!   fresh SQLite file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

#[cfg(feature = "testing")]
pub mod testing;

static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./sqlite");

/// A migrated connection pool to Postgres (production) or SQLite (embedded default).
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url {0:?}: expected postgres://… or sqlite:…")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Pool sizing; the defaults suit one service process.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout: Duration::from_secs(5) }
    }
}

impl Db {
    /// Opens the database at `url` and applies every pending migration.
    ///
    /// `postgres://…` selects Postgres; `sqlite:path` or `sqlite://path` selects SQLite, creating
    /// the file (not its folder) if missing.
    pub async fn open(url: &str, cfg: &PoolConfig) -> Result<Db, DbError> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(DbError::Connect)?;
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(cfg.acquire_timeout)
                .connect_with(opts)
                .await
                .map_err(DbError::Connect)?;
            Db::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(DbError::Connect)?
                .create_if_missing(true)
                .foreign_keys(true)
                // WAL lets readers run beside the one writer; NORMAL is durable enough with WAL.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(cfg.acquire_timeout)
                .connect_with(opts)
                .await
                .map_err(DbError::Connect)?;
            Db::Sqlite(pool)
        } else {
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies every pending migration of this dialect.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Postgres(p) => POSTGRES.run(p).await.map_err(DbError::Migrate),
            Db::Sqlite(p) => SQLITE.run(p).await.map_err(DbError::Migrate),
        }
    }

    /// A cheap round trip, for readiness probes.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
        }
    }

    /// The dialect's name, for logs and metrics labels.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        match self {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }
}

/// Runs the same statement on either dialect: `on_db!(db, |pool| sqlx::query(..).execute(pool))`
/// expands to a match with the closure body once per pool type, for queries whose SQL text is
/// the same in both dialects.
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Postgres($pool) => $body,
            $crate::Db::Sqlite($pool) => $body,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_the_same_steps() {
        let pg: Vec<_> = POSTGRES.iter().map(|m| (m.version, m.description.clone())).collect();
        let lite: Vec<_> = SQLITE.iter().map(|m| (m.version, m.description.clone())).collect();
        assert_eq!(pg, lite, "postgres/ and sqlite/ must hold the same migration steps");
        assert!(!pg.is_empty());
    }

    #[tokio::test]
    async fn rejects_unknown_url_scheme() {
        let err = Db::open("mysql://x", &PoolConfig::default()).await.err();
        assert!(matches!(err, Some(DbError::UnsupportedUrl(_))), "{err:?}");
    }
}
