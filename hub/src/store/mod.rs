//! The hub's metadata store: accounts, API keys, connections, object
//! metadata, the transfer log and activity events.
//!
//! One [`Store`] type serves every caller. Queries are written once in the SQL
//! that SQLite and PostgreSQL share (`$1` placeholders, `BIGINT` unix
//! milliseconds, text ids) and run through sqlx's `Any` driver; only the
//! schema migrations and the way write transactions begin differ by
//! backend. SQLite, one file in the state directory, is the default;
//! PostgreSQL serves several hubs, each writing to the primary and reading
//! its region's replica ([`replica`]).

mod accounts;
mod cache;
mod connections;
mod copy;
mod events;
mod fleets;
mod hubs;
mod index;
mod intents;
pub mod limits;
mod migrations;
mod objects;
pub mod replica;
mod s3_keys;
mod s3_multipart;
mod spokes;
mod steering;
mod transfer_log;
mod uploads;
pub mod usage;
pub mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor as _};

pub use accounts::{Account, ApiKeyInfo, KEY_PREFIX as API_KEY_PREFIX, NewApiKey};
pub use connections::ConnectionRow;
pub use copy::CopyOutcome;
pub use events::{Event, EventKind, EventRecord, Origin};
pub use fleets::FleetRow;
pub use hubs::HubRow;
pub use index::{
    Facts, HeldIndex, IndexEntry, IndexState, Listed, ScanApplied, ScanChange, key_of, prefix_end,
};
pub use intents::{Conflicting, Outcome, PendingIntent};
pub use migrations::Dialect;
pub use objects::{Commit, Direction, ObjectMeta, Transfer, TransferStatus};
pub use s3_keys::{S3Key, make_s3_key};
pub use s3_multipart::{MultipartPart, MultipartUpload};
pub use spokes::{EnrolRefusal, SpokeRow, SpokeStanding, valid_spoke_name};
pub use steering::{Presence, SharedSample};
pub use transfer_log::TransferLog;
pub use uploads::{AppendEnd, LeaseAsk, UploadRefusal, new_upload_id};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; a retry may help.
    #[error("the metadata store failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A unique name is taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// Another change to an object came first ([`Store::record_intent`]).
    #[error("another change to the object came first ({0:?})")]
    WriteConflict(Conflicting),
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
        migrations::Dialect::Postgres => pool.begin().await,
    }
}

/// A write transaction; committing it also records the write for
/// read-your-writes. It derefs to the connection, so queries run on
/// `&mut *tx`.
pub(crate) struct WriteTx<'s> {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    store: &'s Store,
    /// Whether it added webhook deliveries, to wake the sender once it
    /// commits.
    outbox: bool,
}

impl WriteTx<'_> {
    /// Commits, then records the write.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        let done = self.tx.commit().await;
        self.store.note_writes(done.is_ok(), "a commit");
        done?;
        self.store.note_write().await;
        if self.outbox {
            self.store.outbox.notify_one();
        }
        Ok(())
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
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
    /// The primary (the only database with SQLite): every write, and reads
    /// that must see the latest state.
    pool: AnyPool,
    /// The local replica, for reads.
    replica: Option<Arc<replica::Replica>>,
    dialect: migrations::Dialect,
    /// Whether the primary took the last write or check (see
    /// [`Store::writable`]).
    primary_up: Arc<AtomicBool>,
    /// PostgreSQL: one connection of its own to the primary for checks,
    /// so that a busy pool does not look like a lost primary.
    health: Option<Arc<PrimaryCheck>>,
    /// API keys' accounts and connections, kept between requests.
    cache: Arc<cache::Cache>,
    /// Wakes this hub's webhook sender when a commit added deliveries.
    outbox: Arc<tokio::sync::Notify>,
}

/// How long a check of a database may take before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection the check each second asks the primary through, kept
/// outside the pools: a pool's connection attempts back off and retry
/// within its acquire timeout, and a check cut short by its own timeout
/// while the pool reconnects must not decide the next one. A connection
/// that fails or is cut short is dropped, and the next check opens a new
/// one.
struct PrimaryCheck {
    options: sqlx::any::AnyConnectOptions,
    conn: tokio::sync::Mutex<Option<sqlx::AnyConnection>>,
}

impl std::fmt::Debug for PrimaryCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options hold the password.
        f.debug_struct("PrimaryCheck").finish_non_exhaustive()
    }
}

impl PrimaryCheck {
    fn new(url: &str) -> Result<Self, sqlx::Error> {
        Ok(Self {
            options: url.parse()?,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether the primary answers within [`CHECK_TIMEOUT`] and is not a
    /// standby.
    async fn takes_writes(&self) -> bool {
        use sqlx::ConnectOptions as _;
        let mut slot = self.conn.lock().await;
        let asked = tokio::time::timeout(CHECK_TIMEOUT, async {
            if slot.is_none() {
                *slot = Some(self.options.connect().await?);
            }
            let conn = slot.as_mut().expect("just opened");
            sqlx::query_scalar::<_, bool>("SELECT NOT pg_is_in_recovery()")
                .fetch_one(conn)
                .await
        })
        .await;
        match asked {
            Ok(Ok(writable)) => writable,
            _ => {
                *slot = None;
                false
            }
        }
    }

    async fn close(&self) {
        use sqlx::Connection as _;
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

/// How to reach PostgreSQL. Its `Debug` leaves the URLs out, since they
/// hold the password.
#[derive(Clone)]
pub struct PostgresOptions {
    /// The primary, for writes: `postgres://user@host:port/database`,
    /// with the password (if any) already in it.
    pub primary_url: String,
    /// This region's streaming replica, for reads.
    pub replica_url: Option<String>,
    /// Connections to the primary.
    pub pool_size: u32,
    /// Connections to the replica.
    pub replica_pool_size: u32,
    /// How long getting a connection may take.
    pub connect_timeout: Duration,
    /// How long a read waits for the replica to catch up with the
    /// reader's own write before it reads the primary instead.
    pub read_your_writes_wait: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("primary_url", &"…")
            .field("replica_url", &self.replica_url.as_ref().map(|_| "…"))
            .field("pool_size", &self.pool_size)
            .field("replica_pool_size", &self.replica_pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_your_writes_wait", &self.read_your_writes_wait)
            .finish()
    }
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
            // A file opened in this process does not go away: checking a
            // connection before each use would cost every query a second
            // round trip to SQLite's worker thread.
            .test_before_acquire(false)
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
            replica: None,
            dialect: migrations::Dialect::Sqlite,
            primary_up: Arc::new(AtomicBool::new(true)),
            health: None,
            cache: Arc::default(),
            outbox: Arc::default(),
        };
        migrations::apply(&store.pool, migrations::Dialect::Sqlite).await?;
        Ok(store)
    }

    /// Connects to PostgreSQL (the primary, and the replica if given) and
    /// applies pending migrations on the primary.
    pub async fn open_postgres(o: &PostgresOptions) -> Result<Self, StoreError> {
        install_default_drivers();
        // Two at least: migrating holds one connection for its lock.
        let pool = AnyPoolOptions::new()
            .max_connections(o.pool_size.max(2))
            .acquire_timeout(o.connect_timeout)
            .connect(&o.primary_url)
            .await?;
        migrations::apply(&pool, migrations::Dialect::Postgres).await?;
        let replica = match &o.replica_url {
            Some(url) => {
                // Lazily: a hub starts while its replica is still coming up.
                let replica = AnyPoolOptions::new()
                    .max_connections(o.replica_pool_size)
                    .acquire_timeout(o.connect_timeout)
                    .connect_lazy(url)?;
                Some(Arc::new(replica::Replica::new(
                    replica,
                    o.read_your_writes_wait,
                    migrations::newest(),
                )))
            }
            None => None,
        };
        let health = Arc::new(PrimaryCheck::new(&o.primary_url)?);
        Ok(Self {
            pool,
            replica,
            dialect: migrations::Dialect::Postgres,
            primary_up: Arc::new(AtomicBool::new(true)),
            health: Some(health),
            cache: Arc::default(),
            outbox: Arc::default(),
        })
    }

    /// The pool reads go to: the replica, unless the current principal's
    /// own recent write is not on it yet.
    pub(crate) async fn read_pool(&self) -> &AnyPool {
        match &self.replica {
            Some(r) => r.read_pool(&self.pool).await,
            None => &self.pool,
        }
    }

    /// Reads the cache epoch ([`cache`]) from the database reads go to,
    /// emptying the cache if it moved; returns whether it could be read.
    /// Called every second: until it has succeeded, and whenever it has not
    /// for [`cache::TRUST`], the cache is not used.
    pub async fn watch_epoch(&self) -> bool {
        let asked = std::time::Instant::now();
        let read = sqlx::query_scalar::<_, i64>("SELECT epoch FROM cache_epoch WHERE id = 1")
            .fetch_one(self.read_pool().await);
        match tokio::time::timeout(CHECK_TIMEOUT, read).await {
            Ok(Ok(epoch)) => {
                self.cache.observe(epoch, asked);
                true
            }
            _ => false,
        }
    }

    /// The cache epoch this hub last read from the store: grants carry it,
    /// so that spokes keep none made before a later invalidation.
    pub fn observed_epoch(&self) -> Option<i64> {
        self.cache.epoch()
    }

    /// The cache epoch as the primary has it now (`None` if it does not
    /// answer within [`CHECK_TIMEOUT`]): sent with an invalidation.
    pub async fn current_epoch(&self) -> Option<i64> {
        let read = sqlx::query_scalar::<_, i64>("SELECT epoch FROM cache_epoch WHERE id = 1")
            .fetch_one(&self.pool);
        tokio::time::timeout(CHECK_TIMEOUT, read).await.ok()?.ok()
    }

    /// Bumps the cache epoch within a write that changes what the cache
    /// holds (a key revoked, a connection deleted or re-sealed), so that
    /// every hub empties its cache; this hub's is emptied once the write
    /// commits ([`Store::changed_cached`]).
    pub(crate) async fn bump_epoch(tx: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE cache_epoch SET epoch = epoch + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Empties this hub's cache after a committed [`Store::bump_epoch`].
    pub(crate) fn changed_cached(&self) {
        self.cache.empty();
    }

    /// Commits a write that may have changed what hubs cache: when it did
    /// (`changed`), the epoch is bumped in it and this hub's cache emptied
    /// once it commits. Returns `changed`.
    pub(crate) async fn commit_cached_change(
        &self,
        mut tx: WriteTx<'_>,
        changed: bool,
    ) -> Result<bool, StoreError> {
        if changed {
            Store::bump_epoch(&mut tx).await?;
        }
        tx.commit().await?;
        self.changed_cached();
        Ok(changed)
    }

    /// Whether reads go to a replica.
    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Records a write the current principal just made, for
    /// read-your-writes at every hub (PostgreSQL; one SQLite file has
    /// nothing to catch up).
    pub(crate) async fn note_write(&self) {
        if self.dialect != migrations::Dialect::Postgres {
            return;
        }
        if let Some(lsn) = replica::record_write(&self.pool).await
            && let Some(r) = &self.replica
        {
            r.remember(lsn);
        }
    }

    /// Asks the replica whether it answers (reads go to the primary while
    /// it does not); `None` without a replica.
    pub async fn check_replica(&self) -> Option<bool> {
        Some(self.replica.as_ref()?.check().await)
    }

    /// Whether the replica answered when last asked (every second);
    /// `None` without a replica.
    pub fn replica_answering(&self) -> Option<bool> {
        self.replica.as_ref().map(|r| r.answering())
    }

    /// The replica's lag behind the primary, in bytes of WAL; `None`
    /// without a replica or when one of them does not answer.
    pub async fn replica_lag_bytes(&self) -> Option<u64> {
        self.replica.as_ref()?.lag_bytes(&self.pool).await
    }

    /// Which database this store keeps its data in.
    pub fn backend(&self) -> Dialect {
        self.dialect
    }

    /// Takes a lock for the rest of `tx` that serialises transactions
    /// naming the same `what`, where the database does not serialise
    /// writers itself (PostgreSQL; SQLite's writers are serial already).
    pub(crate) async fn serialise(
        &self,
        tx: &mut WriteTx<'_>,
        what: &str,
    ) -> Result<(), sqlx::Error> {
        if self.dialect == migrations::Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
                .bind(what)
                .fetch_one(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Begins a transaction that will write.
    ///
    /// SQLite's plain `BEGIN` takes the write lock only at the first write; if
    /// another connection committed since this one's first read, the upgrade
    /// fails at once with "database is locked" and the busy timeout never
    /// applies. `BEGIN IMMEDIATE` takes the lock up front, so writers queue on
    /// the busy timeout instead of failing.
    ///
    /// On PostgreSQL, while the primary is known not to take writes (the
    /// last write or check failed) this fails at once rather than waiting
    /// `connect_timeout_secs` for a connection; the check each second
    /// notices when it is back.
    pub(crate) async fn write_tx(&self) -> Result<WriteTx<'_>, sqlx::Error> {
        self.refuse_if_down()?;
        let tx = begin_write(&self.pool, self.dialect).await;
        if tx.is_err() {
            self.note_writes(false, "a transaction");
        }
        Ok(WriteTx {
            tx: tx?,
            store: self,
            outbox: false,
        })
    }

    /// Fails at once while the primary is known not to take writes (see
    /// [`Store::write_tx`]); single-statement writes call it first.
    pub(crate) fn refuse_if_down(&self) -> Result<(), sqlx::Error> {
        if self.writable() {
            return Ok(());
        }
        Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "the primary does not take writes (it failed its last check)",
        )))
    }

    /// Notes whether the primary took a write (PostgreSQL; a failed
    /// SQLite write says nothing about the next).
    fn note_writes(&self, ok: bool, by: &'static str) {
        if self.dialect != migrations::Dialect::Postgres {
            return;
        }
        let was = self.primary_up.swap(ok, Ordering::Relaxed);
        if was && !ok {
            tracing::warn!(by, "the metadata store's primary does not take writes");
        } else if !was && ok {
            tracing::info!(by, "the metadata store's primary takes writes again");
        }
    }

    /// Asks the primary, within [`CHECK_TIMEOUT`], whether it answers and
    /// takes writes (it is not a standby), noting the answer; true when it
    /// does.
    pub async fn check_primary(&self) -> bool {
        let ok = match &self.health {
            Some(check) => check.takes_writes().await,
            None => sqlx::query("SELECT 1").execute(&self.pool).await.is_ok(),
        };
        self.note_writes(ok, "the check");
        ok
    }

    /// Whether the primary took the last write or check (checks run every
    /// second): callers about to change a provider's content ask first, so
    /// that a store that cannot record the change leaves the content as it
    /// was. Always true on SQLite.
    pub fn writable(&self) -> bool {
        self.primary_up.load(Ordering::Relaxed)
    }

    /// Checks that the store answers reads (the replica, when there is
    /// one and it answers: a hub that lost its primary still serves reads,
    /// and one that lost its replica reads the primary).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pool = match &self.replica {
            Some(r) if r.answering() => r.pool(),
            _ => &self.pool,
        };
        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(())
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(h) = &self.health {
            h.close().await;
        }
        if let Some(r) = &self.replica {
            r.pool().close().await;
        }
    }
}

pub use ferry_common::content::model::now_ms;

/// Microseconds since the Unix epoch: a new version's generation.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values (numbered
/// placeholders, which both SQLite and PostgreSQL take).
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

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

/// A `LIMIT` is never a bare parameter: SQLite (3.47 on) reads a bound
/// `LIMIT $n` while planning, so every new value made the statement be
/// parsed and planned again — most of a listing's cost. `LIMIT CAST($n AS
/// BIGINT)` is the same on both databases and planned once.
#[cfg(test)]
mod limit_tests {
    const SOURCES: &[(&str, &str)] = &[
        ("accounts.rs", include_str!("accounts.rs")),
        ("connections.rs", include_str!("connections.rs")),
        ("copy.rs", include_str!("copy.rs")),
        ("events.rs", include_str!("events.rs")),
        ("fleets.rs", include_str!("fleets.rs")),
        ("hubs.rs", include_str!("hubs.rs")),
        ("index.rs", include_str!("index.rs")),
        ("objects.rs", include_str!("objects.rs")),
        ("replica.rs", include_str!("replica.rs")),
        ("s3_keys.rs", include_str!("s3_keys.rs")),
        ("s3_multipart.rs", include_str!("s3_multipart.rs")),
        ("spokes.rs", include_str!("spokes.rs")),
        ("steering.rs", include_str!("steering.rs")),
        ("transfer_log.rs", include_str!("transfer_log.rs")),
        ("uploads.rs", include_str!("uploads.rs")),
    ];

    #[test]
    fn no_query_binds_a_bare_limit() {
        for (file, text) in SOURCES {
            for (n, line) in text.lines().enumerate() {
                let bare = line.match_indices("LIMIT $").next().is_some();
                assert!(!bare, "{file}:{}: use LIMIT CAST($n AS BIGINT)", n + 1);
            }
        }
    }
}

#[cfg(test)]
mod placeholder_tests {
    #[test]
    fn placeholders_are_numbered_across_rows() {
        assert_eq!(super::placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A SQLite store in `dir` with the migrations up to `version` only,
    /// as an older release left it.
    pub async fn store_at_version(dir: &Path, version: i64) -> Store {
        install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", dir.join("hub.db").display());
        let pool = AnyPoolOptions::new().connect(&url).await.unwrap();
        migrations::apply_through(&pool, version).await.unwrap();
        Store {
            pool,
            replica: None,
            dialect: migrations::Dialect::Sqlite,
            primary_up: Arc::new(AtomicBool::new(true)),
            health: None,
            cache: Arc::default(),
            outbox: Arc::default(),
        }
    }

    /// A new account with a `memory` connection `id` (its sealed
    /// configuration a placeholder): the account's id and the connection.
    pub async fn account_with_connection(store: &Store, id: &str) -> (String, ConnectionRow) {
        let (account, _) = store.create_account("t").await.unwrap();
        let conn = ConnectionRow {
            id: id.into(),
            account_id: account.id.clone(),
            name: "local".into(),
            provider: "memory".into(),
            config_sealed: b"x".to_vec(),
            created_at: now_ms(),
            scan_interval_secs: None,
        };
        store.create_connection(&conn, None).await.unwrap();
        (account.id, conn)
    }

    /// A store in a fresh temporary directory.
    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("hub.db"), 2)
            .await
            .unwrap();
        (store, dir)
    }
}
