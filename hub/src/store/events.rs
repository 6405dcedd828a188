//! The activity feed: what was changed through the API, per account, in
//! order, resumable by cursor. Event ids grow with commit order (SQLite
//! serialises writers; on PostgreSQL the transactions that add events take
//! one lock), so "events after id N" never skips one.

use serde::Serialize;
use sqlx::Row as _;

use super::{Store, StoreError};

pub use ferry_common::content::model::{EventKind, EventRecord};

/// A recorded event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Position in the feed; also the cursor to resume after it.
    pub id: i64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The connection it happened in.
    pub connection_id: String,
    /// The path.
    pub path: String,
    /// The source of a move or copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The file's size, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// When, unix milliseconds.
    pub at: i64,
}

pub(super) async fn insert(
    conn: &mut sqlx::AnyConnection,
    e: &EventRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (account_id, connection_id, kind, path, from_path, size, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&e.account_id)
    .bind(&e.connection_id)
    .bind(e.kind.as_str())
    .bind(&e.path)
    .bind(e.from_path.as_deref())
    .bind(e.size)
    .bind(e.at)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The account's events after `after`, oldest first.
    pub async fn list_events(
        &self,
        account_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, connection_id, path, from_path, size, at FROM events \
             WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(account_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.read_pool().await)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(Event {
                    id: r.try_get("id")?,
                    kind: EventKind::parse(&kind).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown event kind '{kind}'"))
                    })?,
                    connection_id: r.try_get("connection_id")?,
                    path: r.try_get("path")?,
                    from: r.try_get("from_path")?,
                    size: r.try_get("size")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }
}
