//! Schema migrations, applied in order at start-up, each in a transaction.
//!
//! Each migration has a SQLite and (later) a PostgreSQL text; applied
//! versions are recorded in `ferry_schema`. A migration is never edited once
//! released: changes come as a new one.

use sqlx::AnyPool;

use super::{StoreError, now_ms};

/// The SQL dialect of the connected database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
}

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sqlite: r#"
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hash        BLOB NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_by_account ON api_keys(account_id);
CREATE TABLE connections (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    provider      TEXT NOT NULL,
    config_sealed BLOB NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE TABLE location_claims (
    location    TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL
);
CREATE TABLE objects (
    connection_id        TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    path                 TEXT NOT NULL,
    size                 BIGINT NOT NULL,
    crc64nvme            BIGINT NOT NULL,
    sha256               BLOB,
    content_type         TEXT,
    etag                 TEXT NOT NULL,
    provider_modified_ms BIGINT,
    updated_at           BIGINT NOT NULL,
    PRIMARY KEY (connection_id, path)
);
CREATE TABLE transfers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    path          TEXT NOT NULL,
    direction     TEXT NOT NULL,
    status        TEXT NOT NULL,
    bytes         BIGINT NOT NULL,
    crc64nvme     BIGINT,
    via           TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL
);
CREATE INDEX transfers_by_account ON transfers(account_id, id);
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    path          TEXT NOT NULL,
    from_path     TEXT,
    size          BIGINT,
    at            BIGINT NOT NULL
);
CREATE INDEX events_by_account ON events(account_id, id);
"#,
    },
    Migration {
        version: 2,
        name: "spokes",
        sqlite: r#"
CREATE TABLE spokes (
    name              TEXT PRIMARY KEY,
    token_hash        BLOB UNIQUE,
    token_expires_at  BIGINT,
    cert_sha256       BLOB UNIQUE,
    enrolled_at       BIGINT,
    revoked_at        BIGINT,
    created_at        BIGINT NOT NULL
);
"#,
    },
];

/// Applies every migration not yet recorded.
pub async fn apply(pool: &AnyPool, dialect: Dialect) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS ferry_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM ferry_schema")
        .fetch_one(pool)
        .await?;
    let current = current.unwrap_or(0);
    if let Some(newest) = MIGRATIONS.last()
        && current > newest.version
    {
        return Err(StoreError::Corrupt(format!(
            "the database schema is version {current}, newer than this ferry-hub knows ({}); run a newer release",
            newest.version
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let sql = match dialect {
            Dialect::Sqlite => m.sqlite,
        };
        let fail = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let mut tx = super::begin_write(pool, dialect).await.map_err(fail)?;
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        sqlx::query("INSERT INTO ferry_schema (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied a store migration"
        );
    }
    Ok(())
}
