//! Intents: a change about to be made at a provider, recorded before it is
//! made (see [`ferry_common::content::model::Intent`]). The change's own
//! commit settles its intent in the same transaction; one the commit never
//! settled (the store's primary went away between, the hub stopped) is
//! settled later by what the provider holds (`crate::api::intents`). Each
//! intent is settled once: the commit and the later settling both mark it,
//! and a commit that finds its intent already applied records nothing.

use ferry_common::content::model::{Commit, Intent};

use sqlx::Row as _;

use super::{Store, StoreError, new_id, now_ms};

/// How an intent was settled by what the provider holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider holds what the change made: its record was committed.
    Applied,
    /// The provider does not: nothing was recorded.
    Dropped,
}

impl Outcome {
    /// Its name, as stored and as the metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Dropped => "dropped",
        }
    }
}

/// Why an intent was refused ([`StoreError::WriteConflict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflicting {
    /// Another change to the path is under way: its intent is unsettled.
    UnderWay,
    /// Another change to the path was recorded since this one began.
    Recorded,
}

/// An intent no commit settled.
#[derive(Debug, Clone)]
pub struct PendingIntent {
    /// Its id.
    pub id: String,
    /// What it meant to do.
    pub intent: Intent,
    /// When it was recorded (Unix ms).
    pub created_at: i64,
}

/// The columns [`pending_from_row`] reads.
const PENDING: &str =
    "id, connection_id, path, expect_size, expect_crc, change, absent_path, created_at";

fn pending_from_row(row: &sqlx::any::AnyRow) -> Result<PendingIntent, StoreError> {
    let id: String = row.try_get("id")?;
    let change: String = row.try_get("change")?;
    let change: Commit = serde_json::from_str(&change)
        .map_err(|e| StoreError::Corrupt(format!("intent {id}: {e}")))?;
    let size: Option<i64> = row.try_get("expect_size")?;
    let crc: Option<i64> = row.try_get("expect_crc")?;
    Ok(PendingIntent {
        intent: Intent {
            connection_id: row.try_get("connection_id")?,
            path: row.try_get("path")?,
            expect: size.zip(crc).map(|(s, c)| (s as u64, c as u64)),
            also_absent: row.try_get("absent_path")?,
            replaces: 0,
            change,
        },
        created_at: row.try_get("created_at")?,
        id,
    })
}

impl Store {
    /// Records `intent` before its change is made; its id, for the
    /// change's commit. Needs the primary, as the commit does.
    ///
    /// One change per path at a time, and only to the version it began
    /// with: `WriteConflict` while another intent on the path is unsettled,
    /// or when the path's record is no longer the version the intent
    /// replaces. Checked and recorded under a lock on the path (PostgreSQL;
    /// SQLite's writers are serial), so two hubs cannot both pass.
    pub async fn record_intent(&self, intent: &Intent) -> Result<String, StoreError> {
        let id = new_id("int");
        let mut tx = self.write_tx().await?;
        self.serialise(
            &mut tx,
            &format!("intent:{}/{}", intent.connection_id, intent.path),
        )
        .await?;
        let under_way: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM intents WHERE connection_id = $1 AND path = $2 \
             AND outcome IS NULL",
        )
        .bind(&intent.connection_id)
        .bind(&intent.path)
        .fetch_one(&mut *tx)
        .await?;
        if under_way > 0 {
            return Err(StoreError::WriteConflict(Conflicting::UnderWay));
        }
        let generation: Option<i64> = sqlx::query_scalar(
            "SELECT generation FROM objects WHERE connection_id = $1 AND path = $2",
        )
        .bind(&intent.connection_id)
        .bind(&intent.path)
        .fetch_optional(&mut *tx)
        .await?;
        if generation.unwrap_or(0) != intent.replaces {
            return Err(StoreError::WriteConflict(Conflicting::Recorded));
        }
        sqlx::query(
            "INSERT INTO intents (id, connection_id, path, expect_size, expect_crc, change, \
             absent_path, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&intent.connection_id)
        .bind(&intent.path)
        .bind(intent.expect.map(|(size, _)| size as i64))
        .bind(intent.expect.map(|(_, crc)| crc as i64))
        .bind(serde_json::to_string(&intent.change).expect("a commit serialises"))
        .bind(intent.also_absent.as_deref())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Settles intent `id`, made for `path` of `connection_id`, inside a
    /// commit's transaction: whether the commit is still to be applied
    /// (false when a later settling already applied it). An id that names
    /// no intent for that path settles nothing.
    pub(super) async fn settle_by_commit(
        tx: &mut super::WriteTx<'_>,
        id: &str,
        (connection_id, path): (&str, &str),
    ) -> Result<bool, sqlx::Error> {
        let outcome: Option<Option<String>> = sqlx::query_scalar(
            "DELETE FROM intents WHERE id = $1 AND connection_id = $2 AND path = $3 \
             RETURNING outcome",
        )
        .bind(id)
        .bind(connection_id)
        .bind(path)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(outcome.flatten().as_deref() != Some(Outcome::Applied.as_str()))
    }

    /// Intents recorded before `before` (Unix ms) that nothing settled yet
    /// and that are due by `now` (see [`Store::retry_intent`]), the longest
    /// due first, at most `limit`.
    pub async fn pending_intents(
        &self,
        before: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<PendingIntent>, StoreError> {
        self.refuse_if_down()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PENDING} FROM intents WHERE outcome IS NULL AND created_at < $1 \
             AND next_try_at <= $2 ORDER BY next_try_at, created_at LIMIT CAST($3 AS BIGINT)"
        )))
        .bind(before)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    /// Intent `id`, if nothing settled it yet (read on the primary: it was
    /// recorded a moment ago).
    pub async fn pending_intent(&self, id: &str) -> Result<Option<PendingIntent>, StoreError> {
        self.refuse_if_down()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PENDING} FROM intents WHERE id = $1 AND outcome IS NULL"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(pending_from_row).transpose()
    }

    /// Leaves intent `id` for another look at `at` (Unix ms): the provider
    /// did not answer, or does not hold the change (yet).
    pub async fn retry_intent(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE intents SET next_try_at = $1 WHERE id = $2 AND outcome IS NULL")
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Settles intent `id` by what the provider holds, committing `change`
    /// when it was `Applied` — unless the path was recorded again since the
    /// intent was made (a later change, which the provider's answer may
    /// already show or not), which is then kept and the intent dropped.
    /// Returns how it was settled; `None` when something settled it
    /// meanwhile. Settled intents are kept a day (a commit arriving late
    /// learns of the settling from them), then forgotten by
    /// [`Store::forget_intents`].
    pub async fn settle_intent(
        &self,
        id: &str,
        outcome: Outcome,
        change: &Commit,
    ) -> Result<Option<Outcome>, StoreError> {
        let mut tx = self.write_tx().await?;
        let superseded: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM objects o JOIN intents i \
             ON o.connection_id = i.connection_id AND o.path = i.path \
             WHERE i.id = $1 AND o.updated_at >= i.created_at",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let outcome = match superseded {
            0 => outcome,
            _ => Outcome::Dropped,
        };
        let marked =
            sqlx::query("UPDATE intents SET outcome = $1 WHERE id = $2 AND outcome IS NULL")
                .bind(outcome.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if marked.rows_affected() != 1 {
            return Ok(None);
        }
        if outcome == Outcome::Applied {
            self.commit_in(&mut tx, change).await?;
        }
        tx.commit().await?;
        Ok(Some(outcome))
    }

    /// Forgets intents settled before `before` (Unix ms).
    pub async fn forget_intents(&self, before: i64) -> Result<u64, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query("DELETE FROM intents WHERE outcome IS NOT NULL AND created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;
    use ferry_common::content::model::{EventKind, EventRecord, Origin};

    fn intent(account: &str, path: &str) -> Intent {
        Intent {
            connection_id: "con_1".into(),
            path: path.into(),
            expect: None,
            also_absent: None,
            replaces: 0,
            change: Commit {
                event: Some(EventRecord {
                    account_id: account.into(),
                    connection_id: "con_1".into(),
                    kind: EventKind::Deleted,
                    path: path.into(),
                    from_path: None,
                    size: Some(1),
                    at: now_ms(),
                    origin: Origin::Ferry,
                }),
                ..Commit::default()
            },
        }
    }

    /// An upload of one byte to `path` of `con_1`, replacing `replaces`.
    fn upload(account: &str, path: &str, replaces: i64) -> Intent {
        let at = now_ms();
        let meta = ferry_common::content::model::ObjectMeta {
            connection_id: "con_1".into(),
            path: path.into(),
            size: 1,
            crc64nvme: 7,
            sha256: None,
            content_type: None,
            etag: "\"7-1\"".into(),
            provider_modified_ms: None,
            updated_at: at,
            headers: Vec::new(),
            generation: 0,
        };
        Intent {
            connection_id: "con_1".into(),
            path: path.into(),
            expect: Some((1, 7)),
            also_absent: None,
            replaces,
            change: Commit {
                upsert: Some(meta),
                event: Some(EventRecord {
                    account_id: account.into(),
                    connection_id: "con_1".into(),
                    kind: EventKind::Created,
                    path: path.into(),
                    from_path: None,
                    size: Some(1),
                    at,
                    origin: Origin::Ferry,
                }),
                ..Commit::default()
            },
        }
    }

    #[tokio::test]
    async fn one_change_per_path_at_a_time_and_only_to_the_version_it_began_with() {
        let (store, _dir) = store().await;
        let (account, _) = store.create_account("a").await.unwrap();
        let conn = crate::store::ConnectionRow {
            id: "con_1".into(),
            account_id: account.id.clone(),
            name: "local".into(),
            provider: "memory".into(),
            config_sealed: vec![1, 2, 3],
            created_at: now_ms(),
            scan_interval_secs: None,
        };
        store.create_connection(&conn, None).await.unwrap();
        let upload = |path: &str, replaces: i64| upload(&account.id, path, replaces);
        let generation = async || {
            store
                .get_object("con_1", "x")
                .await
                .unwrap()
                .map_or(0, |m| m.generation)
        };
        let commit = async |intent: &Intent, id: String| {
            let mut change = intent.change.clone();
            change.intent = Some(id);
            store.commit(&change).await.unwrap();
        };
        let refused = |r: Result<String, StoreError>| match r {
            Err(StoreError::WriteConflict(why)) => why,
            other => panic!("expected a write conflict, got {other:?}"),
        };

        // Two writers that began with nothing there: the first to record
        // its intent goes on; the other is refused while it is under way,
        // and after its commit because the path changed since it began.
        let first = upload("x", 0);
        let id = store.record_intent(&first).await.unwrap();
        assert_eq!(
            refused(store.record_intent(&upload("x", 0)).await),
            Conflicting::UnderWay
        );
        assert!(
            store.record_intent(&upload("y", 0)).await.is_ok(),
            "other paths are not held up"
        );
        commit(&first, id).await;
        let g1 = generation().await;
        assert!(g1 > 0);
        assert_eq!(
            refused(store.record_intent(&upload("x", 0)).await),
            Conflicting::Recorded
        );

        // One that began after it goes on, and makes a newer version.
        let second = upload("x", g1);
        let id = store.record_intent(&second).await.unwrap();
        commit(&second, id).await;
        let g2 = generation().await;
        assert!(g2 > g1);

        // A record completed without a change of content (its SHA-256
        // computed later) is the same version.
        let mut completed = second.change.upsert.clone().unwrap();
        completed.sha256 = Some(vec![1; 32]);
        completed.updated_at += 1;
        store
            .commit(&Commit {
                upsert: Some(completed),
                ..Commit::default()
            })
            .await
            .unwrap();
        assert_eq!(generation().await, g2);

        // Deleted and written again: a version above every earlier one, so
        // a writer that saw the first cannot take the new one for it.
        let mut delete = intent(&account.id, "x");
        delete.replaces = g2;
        delete.change.remove = vec![("con_1".into(), "x".into())];
        delete.change.event.as_mut().unwrap().at = now_ms() + 10;
        let id = store.record_intent(&delete).await.unwrap();
        commit(&delete, id).await;
        assert_eq!(generation().await, 0);
        let again = upload("x", 0);
        let id = store.record_intent(&again).await.unwrap();
        let mut change = again.change.clone();
        change.intent = Some(id);
        change.upsert.as_mut().unwrap().updated_at = now_ms() + 20;
        store.commit(&change).await.unwrap();
        assert!(generation().await > g2);

        // An intent settled without its commit (dropped) frees the path.
        let later = now_ms() + 1_000;
        let third = upload("z", 0);
        let id = store.record_intent(&third).await.unwrap();
        assert_eq!(
            refused(store.record_intent(&upload("z", 0)).await),
            Conflicting::UnderWay
        );
        store
            .settle_intent(&id, Outcome::Dropped, &third.change)
            .await
            .unwrap();
        assert!(store.record_intent(&upload("z", 0)).await.is_ok());
        assert!(store.pending_intents(later, later, 10).await.unwrap().len() >= 2);
    }

    #[tokio::test]
    async fn each_change_is_recorded_once_whoever_settles_it() {
        let (store, _dir) = store().await;
        let events = async || store.list_events("acc_1", 0, 100).await.unwrap().len();
        let later = now_ms() + 1_000;

        // Settled by its commit: nothing left to settle.
        let a = intent("acc_1", "a");
        let id = store.record_intent(&a).await.unwrap();
        let mut change = a.change.clone();
        change.intent = Some(id);
        store.commit(&change).await.unwrap();
        assert!(
            store
                .pending_intents(later, later, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(events().await, 1);

        // Applied by a settling first: the late commit records nothing.
        let b = intent("acc_1", "b");
        let id = store.record_intent(&b).await.unwrap();
        let pending = store.pending_intents(later, later, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].intent, b);
        assert!(
            store
                .settle_intent(&id, Outcome::Applied, &b.change)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .settle_intent(&id, Outcome::Applied, &b.change)
                .await
                .unwrap()
                .is_none(),
            "settled once"
        );
        assert_eq!(events().await, 2);
        let mut late = b.change.clone();
        late.intent = Some(id);
        store.commit(&late).await.unwrap();
        assert_eq!(events().await, 2, "not recorded twice");

        // Dropped by a settling (the provider was slower): the late commit
        // records it.
        let c = intent("acc_1", "c");
        let id = store.record_intent(&c).await.unwrap();
        assert!(
            store
                .settle_intent(&id, Outcome::Dropped, &c.change)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(events().await, 2);
        let mut late = c.change.clone();
        late.intent = Some(id);
        store.commit(&late).await.unwrap();
        assert_eq!(events().await, 3);

        // Settled intents no commit came for are forgotten in time;
        // unsettled ones are not.
        let d = intent("acc_1", "d");
        let id = store.record_intent(&d).await.unwrap();
        assert!(
            store
                .settle_intent(&id, Outcome::Dropped, &d.change)
                .await
                .unwrap()
                .is_some()
        );
        let e = intent("acc_1", "e");
        store.record_intent(&e).await.unwrap();
        assert_eq!(store.forget_intents(later).await.unwrap(), 1);
        let pending = store.pending_intents(later, later, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].intent.path, "e");
    }
}
