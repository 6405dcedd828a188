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

impl Store {
    /// Records `intent` before its change is made; its id, for the
    /// change's commit. Needs the primary, as the commit does.
    pub async fn record_intent(&self, intent: &Intent) -> Result<String, StoreError> {
        let id = new_id("int");
        let mut tx = self.write_tx().await?;
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

    /// Settles intent `id` inside a commit's transaction: whether the
    /// commit is still to be applied (false when a later settling already
    /// applied it).
    pub(super) async fn settle_by_commit(
        tx: &mut super::WriteTx<'_>,
        id: &str,
    ) -> Result<bool, sqlx::Error> {
        let outcome: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM intents WHERE id = $1 RETURNING outcome")
                .bind(id)
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
        let rows = sqlx::query(
            "SELECT id, connection_id, path, expect_size, expect_crc, change, absent_path, \
             created_at FROM intents WHERE outcome IS NULL AND created_at < $1 \
             AND next_try_at <= $2 ORDER BY next_try_at, created_at LIMIT CAST($3 AS BIGINT)",
        )
        .bind(before)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let change: String = row.try_get("change")?;
            let change: Commit = serde_json::from_str(&change)
                .map_err(|e| StoreError::Corrupt(format!("intent {id}: {e}")))?;
            let size: Option<i64> = row.try_get("expect_size")?;
            let crc: Option<i64> = row.try_get("expect_crc")?;
            pending.push(PendingIntent {
                intent: Intent {
                    connection_id: row.try_get("connection_id")?,
                    path: row.try_get("path")?,
                    expect: size.zip(crc).map(|(s, c)| (s as u64, c as u64)),
                    also_absent: row.try_get("absent_path")?,
                    change,
                },
                created_at: row.try_get("created_at")?,
                id,
            });
        }
        Ok(pending)
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
