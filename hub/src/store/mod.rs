//! The hub's metadata store: accounts, API keys, connections, object
//! metadata, the transfer log and activity events.
//!
//! One [`Store`] type serves every caller. Queries are written once in the SQL
//! that SQLite and PostgreSQL share (`$1` placeholders, `BIGINT` unix
//! milliseconds, text ids) and run through sqlx's `Any` driver; only the
//! schema migrations differ by backend. SQLite, one file in the state
//! directory, is the default.

mod accounts;
mod connections;
mod events;
mod migrations;
mod objects;
mod spokes;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor as _};

pub use accounts::{Account, ApiKeyInfo, NewApiKey};
pub use connections::ConnectionRow;
pub use events::{Event, EventKind, EventRecord};
pub use objects::{Commit, Direction, ObjectMeta, Transfer, TransferStatus};
pub use spokes::{EnrolRefusal, SpokeRow, valid_spoke_name};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; a retry may help.
    #[error("the metadata store failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A unique name is taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// Another account holds a storage location overlapping the one asked for.
    #[error("another account uses an overlapping storage location")]
    LocationInUse,
    /// A row holds data this version cannot read.
    #[error("damaged row: {0}")]
    Corrupt(String),
    /// A schema migration failed; the hub cannot start.
    #[error("migration {version} ({name}) failed")]
    Migration {
        /// The migration's number.
        version: i64,
        /// Its name.
        name: &'static str,
        /// What the database said.
        source: sqlx::Error,
    },
}

/// Begins a write transaction in the form `dialect` needs; see
/// [`Store::write_tx`].
async fn begin_write(
    pool: &AnyPool,
    dialect: migrations::Dialect,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match dialect {
        migrations::Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
    }
}

impl StoreError {
    pub(crate) fn from_unique(e: sqlx::Error, what: &'static str) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(what),
            _ => Self::Database(e),
        }
    }
}

/// The metadata store, cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: migrations::Dialect,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies
    /// pending migrations.
    pub async fn open_sqlite(path: &Path, pool_size: u32) -> Result<Self, StoreError> {
        install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = AnyPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL makes each
                    // commit durable across a power loss, not only a crash.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Self {
            pool,
            dialect: migrations::Dialect::Sqlite,
        };
        migrations::apply(&store.pool, migrations::Dialect::Sqlite).await?;
        Ok(store)
    }

    /// Begins a transaction that will write.
    ///
    /// SQLite's plain `BEGIN` takes the write lock only at the first write; if
    /// another connection committed since this one's first read, the upgrade
    /// fails at once with "database is locked" and the busy timeout never
    /// applies. `BEGIN IMMEDIATE` takes the lock up front, so writers queue on
    /// the busy timeout instead of failing.
    pub(crate) async fn write_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        begin_write(&self.pool, self.dialect).await
    }

    /// Checks that the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub use ferry_common::content::model::now_ms;

/// A new random identifier with a type prefix, such as `acc_3f9a…`.
pub fn new_id(prefix: &str) -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 10];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('_');
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A store in a fresh temporary directory.
    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("hub.db"), 2)
            .await
            .unwrap();
        (store, dir)
    }
}
