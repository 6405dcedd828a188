//! The activity feed: what was changed through the API, per account, in
//! order, resumable by cursor.
//!
//! Each account's events are numbered 1, 2, 3… (`seq`) in commit order, so
//! a tenant's numbers say nothing about other tenants. A new event takes
//! one more than its account's last number, under a lock per account that
//! lasts until its transaction ends (SQLite serialises writers anyway; on
//! PostgreSQL [`Store::serialise`] takes an advisory lock, so hubs sharing
//! the store number one account's events one at a time), and a unique
//! index on (account, seq) turns any slip into a failed commit rather than
//! a duplicate. "Events after number N" therefore never skips one. The
//! global `id` stays as the row's key and orders events within an account
//! alike; it only translates cursors handed out before the numbering
//! ([`Store::event_seq_at_legacy_id`]).

use serde::Serialize;
use sqlx::Row as _;

use super::{Store, StoreError, WriteTx};

pub use ferry_common::content::model::{EventKind, EventRecord, Origin};

/// A recorded event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Its number in its account's feed (1, 2, 3… in commit order).
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
    /// Who made the change: ferry, or something writing to the provider
    /// directly (found by the hub's scans).
    pub origin: Origin,
}

/// The name [`Store::serialise`] locks while an event of `account_id` is
/// numbered; the PostgreSQL trigger of migration 8 locks the same.
fn numbering_lock(account_id: &str) -> String {
    format!("events:{account_id}")
}

impl Store {
    /// Adds `e` to its account's feed inside `tx`, numbered after the
    /// account's last event.
    pub(super) async fn insert_event(
        &self,
        tx: &mut WriteTx<'_>,
        e: &EventRecord,
    ) -> Result<(), sqlx::Error> {
        self.serialise(tx, &numbering_lock(&e.account_id)).await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO events (account_id, seq, connection_id, kind, path, from_path, size, at, origin) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7, $8 \
             FROM events WHERE account_id = $1 RETURNING seq",
        )
        .bind(&e.account_id)
        .bind(&e.connection_id)
        .bind(e.kind.as_str())
        .bind(&e.path)
        .bind(e.from_path.as_deref())
        .bind(e.size)
        .bind(e.at)
        .bind(match e.origin {
            Origin::Ferry => None,
            other => Some(other.as_str()),
        })
        .fetch_one(&mut **tx)
        .await?;
        self.enqueue_webhooks(tx, e, seq).await
    }

    /// The number of the account's last event removed for its age (0 when
    /// none was): a cursor before it has missed events.
    pub async fn event_horizon(&self, account_id: &str) -> Result<i64, StoreError> {
        let h: Option<i64> =
            sqlx::query_scalar("SELECT purged_through FROM event_horizons WHERE account_id = $1")
                .bind(account_id)
                .fetch_optional(self.read_pool().await)
                .await?;
        Ok(h.unwrap_or(0))
    }

    /// Removes up to `batch` events older than `before` (unix ms), but
    /// never an account's newest (its number is where the next one's
    /// counts from), noting for each account the last number removed in
    /// the same transaction. Returns how many it removed.
    pub async fn purge_events(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "SELECT id, account_id, seq FROM events e WHERE at < $1 \
             AND seq < (SELECT MAX(seq) FROM events m WHERE m.account_id = e.account_id) \
             ORDER BY id LIMIT CAST($2 AS BIGINT)",
        )
        .bind(before)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut through: std::collections::BTreeMap<String, i64> = Default::default();
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let (id, account, seq): (i64, String, i64) = (
                r.try_get("id")?,
                r.try_get("account_id")?,
                r.try_get("seq")?,
            );
            ids.push(id);
            let t = through.entry(account).or_insert(seq);
            *t = (*t).max(seq);
        }
        for (account, seq) in &through {
            sqlx::query(
                "INSERT INTO event_horizons (account_id, purged_through) VALUES ($1, $2) \
                 ON CONFLICT (account_id) DO UPDATE SET purged_through = \
                 CASE WHEN excluded.purged_through > event_horizons.purged_through \
                 THEN excluded.purged_through ELSE event_horizons.purged_through END",
            )
            .bind(account)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in ids.chunks(500) {
            let list = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("DELETE FROM events WHERE id IN ({list})");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.note_write().await;
        Ok(ids.len() as u64)
    }

    /// The account's events numbered above `after`, oldest first.
    pub async fn list_events(
        &self,
        account_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        self.list_events_matching(account_id, after, limit, None, None)
            .await
    }

    /// The account's events numbered above `after`, oldest first, of
    /// connection `connection_id` and about `path` (its `path` or, for a
    /// move or copy, its `from`) where given. The filter reads the
    /// account's events in order, as many as it takes to fill `limit`.
    pub async fn list_events_matching(
        &self,
        account_id: &str,
        after: i64,
        limit: i64,
        connection_id: Option<&str>,
        path: Option<&str>,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, connection_id, path, from_path, size, at, origin FROM events \
             WHERE account_id = $1 AND seq > $2 \
             AND (CAST($4 AS TEXT) IS NULL OR connection_id = $4) \
             AND (CAST($5 AS TEXT) IS NULL OR path = $5 OR from_path = $5) \
             ORDER BY seq LIMIT CAST($3 AS BIGINT)",
        )
        .bind(account_id)
        .bind(after)
        .bind(limit)
        .bind(connection_id)
        .bind(path)
        .fetch_all(self.read_pool().await)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let origin: Option<String> = r.try_get("origin")?;
                Ok(Event {
                    id: r.try_get("seq")?,
                    kind: EventKind::parse(&kind).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown event kind '{kind}'"))
                    })?,
                    connection_id: r.try_get("connection_id")?,
                    path: r.try_get("path")?,
                    from: r.try_get("from_path")?,
                    size: r.try_get("size")?,
                    at: r.try_get("at")?,
                    origin: match origin.as_deref() {
                        None | Some("ferry") => Origin::Ferry,
                        Some("provider") => Origin::Provider,
                        Some(other) => {
                            return Err(StoreError::Corrupt(format!(
                                "unknown event origin '{other}'"
                            )));
                        }
                    },
                })
            })
            .collect()
    }

    /// The number of the account's last event whose global id is at most
    /// `id`: where a cursor of the earlier kind (a global event id) stands
    /// in the account's numbering. Within an account, ids and numbers grow
    /// together, so the events after it are exactly those the old cursor
    /// had still to read.
    pub async fn event_seq_at_legacy_id(
        &self,
        account_id: &str,
        id: i64,
    ) -> Result<i64, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE account_id = $1 AND id <= $2")
                .bind(account_id)
                .bind(id)
                .fetch_one(self.read_pool().await)
                .await?;
        Ok(seq.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Commit;

    fn event(account_id: &str, path: &str) -> EventRecord {
        EventRecord {
            account_id: account_id.to_owned(),
            connection_id: "con_00000000000000000000".to_owned(),
            kind: EventKind::Created,
            path: path.to_owned(),
            from_path: None,
            size: Some(1),
            at: 1,
            origin: Origin::Ferry,
        }
    }

    async fn record(store: &Store, account_id: &str, path: &str) {
        let change = Commit {
            event: Some(event(account_id, path)),
            ..Commit::default()
        };
        store.commit(&change).await.unwrap();
    }

    fn numbers(events: &[Event]) -> Vec<i64> {
        events.iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn each_account_numbers_its_own_events_from_one() {
        let (store, _dir) = crate::store::testing::store().await;
        for (account, path) in [("a", "1"), ("b", "1"), ("a", "2"), ("b", "2"), ("a", "3")] {
            record(&store, account, path).await;
        }
        let a = store.list_events("a", 0, 10).await.unwrap();
        assert_eq!(numbers(&a), [1, 2, 3]);
        assert_eq!(
            numbers(&store.list_events("b", 0, 10).await.unwrap()),
            [1, 2]
        );
        assert_eq!(numbers(&store.list_events("a", 1, 1).await.unwrap()), [2]);
        // B's writes leave A's numbers and cursors where they were.
        record(&store, "b", "3").await;
        assert_eq!(store.list_events("a", 0, 10).await.unwrap(), a);
        assert!(store.list_events("a", 3, 10).await.unwrap().is_empty());
        // Filtered by connection and by path.
        let matching = |c: Option<&'static str>, p: Option<&'static str>| {
            store.list_events_matching("a", 0, 10, c, p)
        };
        assert_eq!(numbers(&matching(None, None).await.unwrap()), [1, 2, 3]);
        let conn = Some("con_00000000000000000000");
        assert_eq!(numbers(&matching(conn, Some("2")).await.unwrap()), [2]);
        assert_eq!(numbers(&matching(conn, None).await.unwrap()), [1, 2, 3]);
        assert!(matching(Some("con_none"), None).await.unwrap().is_empty());
        assert!(matching(None, Some("9")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn old_events_go_but_each_account_keeps_its_newest_and_its_numbering() {
        let (store, _dir) = crate::store::testing::store().await;
        for (account, path) in [("a", "1"), ("a", "2"), ("a", "3"), ("b", "1")] {
            record(&store, account, path).await;
        }
        let later = Commit {
            event: Some(EventRecord {
                at: 1_000,
                ..event("a", "4")
            }),
            ..Commit::default()
        };
        store.commit(&later).await.unwrap();
        // Older than 500: a's first three; b's one is its newest and stays.
        assert_eq!(store.purge_events(500, 100).await.unwrap(), 3);
        assert_eq!(store.event_horizon("a").await.unwrap(), 3);
        assert_eq!(store.event_horizon("b").await.unwrap(), 0);
        assert_eq!(numbers(&store.list_events("a", 0, 10).await.unwrap()), [4]);
        assert_eq!(numbers(&store.list_events("b", 0, 10).await.unwrap()), [1]);
        assert_eq!(store.purge_events(500, 100).await.unwrap(), 0);
        // Numbers go on from where they were.
        record(&store, "a", "5").await;
        assert_eq!(numbers(&store.list_events("a", 4, 10).await.unwrap()), [5]);
        // A batch at a time; the horizon only moves forward.
        assert_eq!(store.purge_events(2_000, 1).await.unwrap(), 1);
        assert_eq!(store.event_horizon("a").await.unwrap(), 4);
        assert_eq!(store.purge_events(2_000, 1).await.unwrap(), 0);
        assert_eq!(numbers(&store.list_events("a", 0, 10).await.unwrap()), [5]);
    }

    #[tokio::test]
    async fn the_migration_numbers_existing_events_and_old_cursors_translate() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::store_at_version(dir.path(), 7).await;
        // Events as the release before the numbering wrote them: global
        // ids, two accounts interleaved.
        for (account, path) in [("a", "1"), ("b", "1"), ("a", "2"), ("b", "2"), ("a", "3")] {
            sqlx::query(
                "INSERT INTO events (account_id, connection_id, kind, path, at) \
                 VALUES ($1, 'con_x', 'created', $2, 1)",
            )
            .bind(account)
            .bind(path)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        store.close().await;
        let store = Store::open_sqlite(&dir.path().join("hub.db"), 2)
            .await
            .unwrap();
        let a = store.list_events("a", 0, 10).await.unwrap();
        assert_eq!(numbers(&a), [1, 2, 3]);
        let paths: Vec<&str> = a.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["1", "2", "3"]);
        assert_eq!(
            numbers(&store.list_events("b", 0, 10).await.unwrap()),
            [1, 2]
        );
        // A's old cursors were global ids 1, 3 and 5: after id 3 (its
        // second event) comes its third.
        for (old, seq) in [(0, 0), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (99, 3)] {
            assert_eq!(
                store.event_seq_at_legacy_id("a", old).await.unwrap(),
                seq,
                "{old}"
            );
        }
        // New events number on.
        record(&store, "a", "4").await;
        assert_eq!(numbers(&store.list_events("a", 3, 10).await.unwrap()), [4]);
    }
}
