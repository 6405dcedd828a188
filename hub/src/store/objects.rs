//! Metadata of the objects ferry has seen, and the transfer log.
//!
//! An object row remembers what ferry computed while the bytes streamed
//! (size, CRC64/NVME, SHA-256 when asked) with the provider's modification
//! time at that moment, so a later read can tell whether the object was
//! changed behind ferry's back. Every change is committed with its event and
//! transfer record in one transaction: the feed never shows a change the
//! metadata lacks, nor the reverse.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::events::{self, NewEvent};
use super::{Store, StoreError};

/// What ferry knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The connection holding it.
    pub connection_id: String,
    /// Its path in the connection.
    pub path: String,
    /// Size in bytes.
    pub size: i64,
    /// CRC64/NVME of the content.
    pub crc64nvme: u64,
    /// SHA-256 of the content, when it was computed.
    pub sha256: Option<Vec<u8>>,
    /// The media type given at upload.
    pub content_type: Option<String>,
    /// The entity tag ferry serves for it, quoted.
    pub etag: String,
    /// The provider's modification time when this row was written.
    pub provider_modified_ms: Option<i64>,
    /// When this row was written, unix milliseconds.
    pub updated_at: i64,
}

/// Which way a transfer's bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to provider.
    Upload,
    /// Provider to client.
    Download,
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStatus {
    /// Every byte moved (and, for uploads, was verified and committed).
    Complete,
    /// The client or provider went away part way.
    Aborted,
    /// The content failed verification and was discarded.
    Rejected,
}

/// One entry of the transfer log.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The account that moved the bytes.
    pub account_id: String,
    /// The connection.
    pub connection_id: String,
    /// The object's path.
    pub path: String,
    /// Upload or download.
    pub direction: Direction,
    /// How it ended.
    pub status: TransferStatus,
    /// Bytes moved.
    pub bytes: i64,
    /// CRC64/NVME of a complete transfer.
    pub crc64nvme: Option<u64>,
    /// Which node carried the bytes: `hub` or a spoke's id.
    pub via: String,
    /// Start, unix milliseconds.
    pub started_at: i64,
    /// Duration in milliseconds.
    pub duration_ms: i64,
}

impl Transfer {
    /// A transfer starting now through `via`, logged as aborted until it ends.
    pub fn start(
        account_id: &str,
        connection_id: &str,
        path: &str,
        direction: Direction,
        via: &str,
    ) -> Self {
        Self {
            account_id: account_id.to_owned(),
            connection_id: connection_id.to_owned(),
            path: path.to_owned(),
            direction,
            status: TransferStatus::Aborted,
            bytes: 0,
            crc64nvme: None,
            via: via.to_owned(),
            started_at: super::now_ms(),
            duration_ms: 0,
        }
    }
}

/// A change to commit at once: object metadata, its event and its transfer.
#[derive(Debug, Default)]
pub struct Change<'a> {
    /// A row to insert or replace.
    pub upsert: Option<&'a ObjectMeta>,
    /// Rows to remove: (connection id, path).
    pub remove: Vec<(&'a str, &'a str)>,
    /// The event to add to the feed.
    pub event: Option<NewEvent<'a>>,
    /// The transfer to log.
    pub transfer: Option<&'a Transfer>,
}

const COLUMNS: &str = "connection_id, path, size, crc64nvme, sha256, content_type, etag, provider_modified_ms, updated_at";

fn from_row(row: &AnyRow) -> Result<ObjectMeta, sqlx::Error> {
    let crc: i64 = row.try_get("crc64nvme")?;
    Ok(ObjectMeta {
        connection_id: row.try_get("connection_id")?,
        path: row.try_get("path")?,
        size: row.try_get("size")?,
        crc64nvme: crc as u64,
        sha256: row.try_get("sha256")?,
        content_type: row.try_get("content_type")?,
        etag: row.try_get("etag")?,
        provider_modified_ms: row.try_get("provider_modified_ms")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// The metadata of one object, if ferry has recorded it.
    pub async fn get_object(
        &self,
        connection_id: &str,
        path: &str,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM objects WHERE connection_id = $1 AND path = $2"
        )))
        .bind(connection_id)
        .bind(path)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Commits a change in one transaction.
    pub async fn commit(&self, change: Change<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (connection_id, path) in change.remove {
            sqlx::query("DELETE FROM objects WHERE connection_id = $1 AND path = $2")
                .bind(connection_id)
                .bind(path)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(m) = change.upsert {
            upsert(&mut tx, m).await?;
        }
        if let Some(e) = &change.event {
            events::insert(&mut tx, e).await?;
        }
        if let Some(t) = change.transfer {
            insert_transfer(&mut tx, t).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Logs a transfer on its own (downloads, rejected uploads).
    pub async fn record_transfer(&self, t: &Transfer) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_transfer(&mut conn, t).await?;
        Ok(())
    }

    /// Counts the transfer log's entries for an account, by direction and
    /// status; for tests and operators.
    pub async fn count_transfers(
        &self,
        account_id: &str,
        direction: Direction,
        status: TransferStatus,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM transfers WHERE account_id = $1 AND direction = $2 AND status = $3",
        )
        .bind(account_id)
        .bind(direction_str(direction))
        .bind(status_str(status))
        .fetch_one(&self.pool)
        .await?)
    }
}

async fn upsert(conn: &mut sqlx::AnyConnection, m: &ObjectMeta) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO objects ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (connection_id, path) DO UPDATE SET size = excluded.size, \
         crc64nvme = excluded.crc64nvme, sha256 = excluded.sha256, \
         content_type = excluded.content_type, etag = excluded.etag, \
         provider_modified_ms = excluded.provider_modified_ms, updated_at = excluded.updated_at"
    )))
    .bind(&m.connection_id)
    .bind(&m.path)
    .bind(m.size)
    .bind(m.crc64nvme as i64)
    .bind(m.sha256.as_deref())
    .bind(m.content_type.as_deref())
    .bind(&m.etag)
    .bind(m.provider_modified_ms)
    .bind(m.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Upload => "upload",
        Direction::Download => "download",
    }
}

fn status_str(s: TransferStatus) -> &'static str {
    match s {
        TransferStatus::Complete => "complete",
        TransferStatus::Aborted => "aborted",
        TransferStatus::Rejected => "rejected",
    }
}

async fn insert_transfer(conn: &mut sqlx::AnyConnection, t: &Transfer) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO transfers (account_id, connection_id, path, direction, status, bytes, crc64nvme, via, started_at, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&t.account_id)
    .bind(&t.connection_id)
    .bind(&t.path)
    .bind(direction_str(t.direction))
    .bind(status_str(t.status))
    .bind(t.bytes)
    .bind(t.crc64nvme.map(|c| c as i64))
    .bind(&t.via)
    .bind(t.started_at)
    .bind(t.duration_ms)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;
    use crate::store::{ConnectionRow, EventKind, now_ms};

    #[tokio::test]
    async fn a_change_commits_metadata_and_event_together() {
        let (store, _dir) = store().await;
        let (account, _) = store.create_account("a").await.unwrap();
        let conn = ConnectionRow {
            id: "con_1".into(),
            account_id: account.id.clone(),
            name: "local".into(),
            provider: "memory".into(),
            config_sealed: vec![1, 2, 3],
            created_at: now_ms(),
        };
        store.create_connection(&conn, None).await.unwrap();
        assert!(matches!(
            store.create_connection(&conn, None).await,
            Err(StoreError::Conflict(_))
        ));
        let meta = ObjectMeta {
            connection_id: conn.id.clone(),
            path: "a/b.txt".into(),
            size: 5,
            crc64nvme: u64::MAX - 1,
            sha256: None,
            content_type: Some("text/plain".into()),
            etag: "\"x\"".into(),
            provider_modified_ms: Some(1),
            updated_at: now_ms(),
        };
        let event = NewEvent {
            account_id: &account.id,
            connection_id: &conn.id,
            kind: EventKind::Created,
            path: "a/b.txt",
            from_path: None,
            size: Some(5),
            at: now_ms(),
        };
        store
            .commit(Change {
                upsert: Some(&meta),
                event: Some(event),
                ..Change::default()
            })
            .await
            .unwrap();
        assert_eq!(
            store.get_object(&conn.id, "a/b.txt").await.unwrap(),
            Some(meta)
        );
        let events = store.list_events(&account.id, 0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Created);

        assert!(
            store
                .delete_connection(&account.id, &conn.id)
                .await
                .unwrap()
        );
        assert_eq!(store.get_object(&conn.id, "a/b.txt").await.unwrap(), None);
    }
}
