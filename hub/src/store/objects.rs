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

use super::intents::Found;
use super::{Store, StoreError};

pub use ferry_common::content::model::{Commit, Direction, ObjectMeta, Transfer, TransferStatus};

pub(super) const COLUMNS: &str = "connection_id, path, size, crc64nvme, sha256, content_type, etag, provider_modified_ms, updated_at, headers, generation";

pub(super) fn from_row(row: &AnyRow) -> Result<ObjectMeta, sqlx::Error> {
    let crc: i64 = row.try_get("crc64nvme")?;
    let headers: Option<String> = row.try_get("headers")?;
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
        headers: headers
            .map(|h| serde_json::from_str(&h))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            .unwrap_or_default(),
        generation: row.try_get("generation")?,
    })
}

/// An object's kept header fields as stored: JSON, or nothing for none.
fn headers_column(headers: &[(String, String)]) -> Option<String> {
    (!headers.is_empty()).then(|| serde_json::to_string(headers).expect("header fields serialise"))
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
        .fetch_optional(self.read_pool().await)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Sets what an object's metadata says of its representation — its
    /// media type and kept header fields — leaving its content's record as
    /// it is; false if ferry has no record of it.
    pub async fn set_object_headers(
        &self,
        connection_id: &str,
        path: &str,
        content_type: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query(
            "UPDATE objects SET content_type = $1, headers = $2 WHERE connection_id = $3 AND path = $4",
        )
        .bind(content_type)
        .bind(headers_column(headers))
        .bind(connection_id)
        .bind(path)
        .execute(&self.pool)
        .await?;
        self.note_write().await;
        Ok(done.rows_affected() > 0)
    }

    /// Commits a change in one transaction.
    pub async fn commit(&self, change: &Commit) -> Result<(), StoreError> {
        self.commit_report(change, None).await.map(drop)
    }

    /// Commits several changes in one transaction.
    pub async fn commit_all(&self, changes: &[Commit]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for change in changes {
            self.commit_in(&mut tx, change).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Commits a spoke's report of a change, once: with the report's id
    /// recorded in the same transaction, a report seen before is not
    /// applied again. Returns whether it was applied now.
    pub async fn commit_report(
        &self,
        change: &Commit,
        report: Option<&str>,
    ) -> Result<bool, StoreError> {
        // PostgreSQL may end a transaction that waits on another in a cycle
        // (the indexer applying a change it found to the same rows, in its
        // own order); the whole transaction is rolled back, so it is tried
        // again as it was.
        let mut tries = 1;
        loop {
            match self.commit_report_once(change, report).await {
                Err(StoreError::Database(e)) if tries < 3 && lost_to_another_writer(&e) => {
                    tracing::info!(error = %e, tries, "a commit lost to another transaction; trying again");
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    async fn commit_report_once(
        &self,
        change: &Commit,
        report: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        if let Some(id) = report
            && !first_time(&mut tx, id).await?
        {
            return Ok(false);
        }
        self.commit_in(&mut tx, change).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Forgets the ids of reports applied before `before` (unix ms): a
    /// spoke sends a report again only within its grant's report window,
    /// at most 30 days.
    pub async fn forget_applied_reports(&self, before: i64) -> Result<u64, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query("DELETE FROM applied_reports WHERE applied_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Applies a change inside a transaction of the caller's; a change
    /// that settles an intent a later settling already applied is not
    /// applied again.
    pub(super) async fn commit_in(
        &self,
        tx: &mut super::WriteTx<'_>,
        change: &Commit,
    ) -> Result<(), StoreError> {
        let changed = change
            .upsert
            .as_ref()
            .map(|m| (m.connection_id.as_str(), m.path.as_str()))
            .or(change.remove.first().map(|(c, p)| (c.as_str(), p.as_str())))
            .or(change
                .event
                .as_ref()
                .map(|e| (e.connection_id.as_str(), e.path.as_str())));
        let found = match (&change.intent, changed) {
            (Some(id), Some(changed)) => Store::settle_by_commit(tx, id, changed).await?,
            _ => Found::Lapsed,
        };
        if found == Found::Applied {
            // Its transfer is the one thing the settling could not record.
            tracing::info!(intent = ?change.intent, "a change was recorded already from what the provider holds");
            if let Some(t) = &change.transfer {
                insert_transfers(tx, std::slice::from_ref(t)).await?;
            }
            return Ok(());
        }
        // A change whose intent it settles is the path's next version:
        // the intents ordered it. Any other (one made without an intent,
        // a spoke's report of an intent settled meanwhile) is ordered by
        // its time: reported late, after another node's newer write of the
        // path, it neither removes nor replaces the newer record.
        let before = match found {
            Found::Held => i64::MAX,
            _ => change.event.as_ref().map_or(i64::MAX, |e| e.at),
        };
        for (connection_id, path) in &change.remove {
            sqlx::query(
                "DELETE FROM objects WHERE connection_id = $1 AND path = $2 AND updated_at <= $3",
            )
            .bind(connection_id)
            .bind(path)
            .bind(before)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(m) = &change.upsert {
            // A change of content (one with its event) is a new version; a
            // record completed without one (a SHA-256 computed later) is
            // the same version, and only for the version it was made of.
            let version = match (&change.event, found) {
                (None, _) => Version::Same,
                (Some(_), Found::Held) => Version::NewInTurn,
                (Some(_), _) => Version::New,
            };
            upsert(tx, m, version).await?;
        }
        self.index_commit(
            tx,
            &change.remove,
            change.upsert.as_ref(),
            change
                .folder
                .as_ref()
                .map(|(c, p)| (c.as_str(), p.as_str())),
        )
        .await?;
        if let Some(e) = &change.event {
            self.insert_event(tx, e).await?;
        }
        if let Some(t) = &change.transfer {
            insert_transfers(tx, std::slice::from_ref(t)).await?;
        }
        Ok(())
    }

    /// Logs a transfer on its own (downloads, rejected uploads).
    pub async fn record_transfer(&self, t: &Transfer) -> Result<(), StoreError> {
        // The entry and its usage together.
        let mut tx = self.write_tx().await?;
        insert_transfers(&mut tx, std::slice::from_ref(t)).await?;
        tx.commit().await?;
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
        .fetch_one(self.read_pool().await)
        .await?)
    }
}

/// What an upserted row is to the path ([`upsert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// A new version whose intent ordered it: it replaces the row.
    NewInTurn,
    /// A new version without an intent that ordered it: it replaces only
    /// a row not newer by time.
    New,
    /// The same version completed (a digest computed later): only the
    /// row of that generation, and not one newer by time.
    Same,
}

/// Inserts or replaces an object's row. A new version's generation is the
/// time in microseconds (the hub's clock), or one more than the row's when
/// that is not higher: never the same twice for a path while the row
/// stands, and after a delete only as the clock repeats itself (so a
/// writer that saw an earlier version does not mistake a later one for it).
async fn upsert(
    conn: &mut sqlx::AnyConnection,
    m: &ObjectMeta,
    version: Version,
) -> Result<(), sqlx::Error> {
    let (generation, only) = match version {
        Version::NewInTurn | Version::New => (
            "CASE WHEN objects.generation >= excluded.generation THEN objects.generation + 1 \
             ELSE excluded.generation END",
            "",
        ),
        Version::Same => (
            "objects.generation",
            " AND objects.generation = excluded.generation",
        ),
    };
    let by_time = match version {
        Version::NewInTurn => "TRUE",
        Version::New | Version::Same => "objects.updated_at <= excluded.updated_at",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO objects ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (connection_id, path) DO UPDATE SET size = excluded.size, \
         crc64nvme = excluded.crc64nvme, sha256 = excluded.sha256, \
         content_type = excluded.content_type, etag = excluded.etag, \
         provider_modified_ms = excluded.provider_modified_ms, updated_at = excluded.updated_at, \
         headers = excluded.headers, generation = {generation} \
         WHERE {by_time}{only}"
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
    .bind(headers_column(&m.headers))
    .bind(match version {
        Version::Same => m.generation,
        Version::NewInTurn | Version::New => super::now_us(),
    })
    .execute(conn)
    .await?;
    Ok(())
}

fn direction_str(d: Direction) -> &'static str {
    d.as_str()
}

fn status_str(s: TransferStatus) -> &'static str {
    s.as_str()
}

/// Rows per `INSERT` of transfers: ten parameters each, well within
/// SQLite's and PostgreSQL's limits.
const TRANSFERS_PER_INSERT: usize = 100;

/// Inserts `transfers` into the transfer log, a hundred rows a statement.
/// Records report `id` as applied in the transaction of `conn`; false if
/// it was already (the report is then not applied again).
pub(super) async fn first_time(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO applied_reports (id, applied_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(super::now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `e` is PostgreSQL ending this transaction for another's sake
/// (a deadlock, or a serialization failure): nothing of it was written, and
/// trying again may succeed.
fn lost_to_another_writer(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

pub(super) async fn insert_transfers(
    conn: &mut sqlx::AnyConnection,
    transfers: &[Transfer],
) -> Result<(), sqlx::Error> {
    for rows in transfers.chunks(TRANSFERS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO transfers (account_id, connection_id, path, direction, status, bytes, crc64nvme, via, started_at, duration_ms) VALUES {}",
            super::placeholders(rows.len(), 10)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in rows {
            q = q
                .bind(&t.account_id)
                .bind(&t.connection_id)
                .bind(&t.path)
                .bind(direction_str(t.direction))
                .bind(status_str(t.status))
                .bind(t.bytes)
                .bind(t.crc64nvme.map(|c| c as i64))
                .bind(&t.via)
                .bind(t.started_at)
                .bind(t.duration_ms);
        }
        q.execute(&mut *conn).await?;
    }
    super::usage::add_transfers(conn, transfers).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;
    use crate::store::{EventKind, EventRecord, Origin, now_ms};

    #[tokio::test]
    async fn a_change_commits_metadata_and_event_together() {
        let (store, _dir) = store().await;
        let (account, conn) = crate::store::testing::account_with_connection(&store, "con_1").await;
        assert!(matches!(
            store.create_connection(&conn, None).await,
            Err(StoreError::Conflict(_))
        ));
        let meta = ObjectMeta {
            generation: 0,
            connection_id: conn.id.clone(),
            path: "a/b.txt".into(),
            size: 5,
            crc64nvme: u64::MAX - 1,
            sha256: None,
            content_type: Some("text/plain".into()),
            etag: "\"x\"".into(),
            provider_modified_ms: Some(1),
            updated_at: now_ms(),
            headers: vec![("x-amz-meta-colour".into(), "blue".into())],
        };
        let event = EventRecord {
            account_id: account.clone(),
            connection_id: conn.id.clone(),
            kind: EventKind::Created,
            path: "a/b.txt".into(),
            from_path: None,
            size: Some(5),
            at: now_ms(),
            origin: Origin::Ferry,
        };
        store
            .commit(&Commit {
                upsert: Some(meta.clone()),
                event: Some(event),
                ..Commit::default()
            })
            .await
            .unwrap();
        let recorded = store.get_object(&conn.id, "a/b.txt").await.unwrap();
        let generation = recorded.as_ref().map_or(0, |m| m.generation);
        assert!(generation > 0, "a new version");
        let meta = ObjectMeta { generation, ..meta };
        assert_eq!(recorded, Some(meta.clone()));
        // Its representation changed, its content's record kept.
        let replaced = vec![("content-disposition".to_owned(), "inline".to_owned())];
        assert!(
            store
                .set_object_headers(&conn.id, "a/b.txt", None, &replaced)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_object(&conn.id, "a/b.txt").await.unwrap(),
            Some(ObjectMeta {
                content_type: None,
                headers: replaced,
                ..meta
            })
        );
        assert!(
            !store
                .set_object_headers(&conn.id, "a/none.txt", None, &[])
                .await
                .unwrap()
        );
        let events = store.list_events(&account, 0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Created);

        assert!(store.delete_connection(&account, &conn.id).await.unwrap());
        assert_eq!(store.get_object(&conn.id, "a/b.txt").await.unwrap(), None);
    }
}
