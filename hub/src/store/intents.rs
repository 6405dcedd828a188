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
    /// The spoke that recorded it through the hub (`None`: a hub, for its
    /// own change): only that spoke may settle or give it up.
    pub made_by: Option<String>,
    /// When it is dropped if the provider does not hold its change, if
    /// sooner than usual (its writer gave it up: [`Store::abandon_intent`]).
    pub drop_at: Option<i64>,
}

/// How a commit found the intent it names ([`Store::settle_by_commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// Unsettled: the commit settles it, and its change is the path's next
    /// version, whatever the clocks say.
    Held,
    /// Settled as applied: the change is recorded already.
    Applied,
    /// Settled as dropped (or forgotten, or never this path's): the change
    /// is recorded unless a newer one is.
    Lapsed,
}

/// The columns [`pending_from_row`] reads.
const PENDING: &str = "id, connection_id, path, expect_size, expect_crc, change, absent_path, \
     source_path, made_by, drop_at, created_at";

fn pending_from_row(row: &sqlx::any::AnyRow) -> Result<PendingIntent, StoreError> {
    let id: String = row.try_get("id")?;
    let change: String = row.try_get("change")?;
    let change: Commit = serde_json::from_str(&change)
        .map_err(|e| StoreError::Corrupt(format!("intent {id}: {e}")))?;
    let size: Option<i64> = row.try_get("expect_size")?;
    let crc: Option<i64> = row.try_get("expect_crc")?;
    let source: Option<String> = row.try_get("source_path")?;
    Ok(PendingIntent {
        intent: Intent {
            connection_id: row.try_get("connection_id")?,
            path: row.try_get("path")?,
            expect: size.zip(crc).map(|(s, c)| (s as u64, c as u64)),
            also_absent: row.try_get("absent_path")?,
            // (Checked when it was recorded; not kept.)
            replaces: 0,
            source: source.map(|p| (p, 0)),
            conditional: false,
            change,
        },
        created_at: row.try_get("created_at")?,
        made_by: row.try_get("made_by")?,
        drop_at: row.try_get("drop_at")?,
        id,
    })
}

/// Unsettled intents that hold `$2` of connection `$1` against a new
/// change to it: those changing it, and those reading it (a copy's source).
const UNDER_WAY: &str = "SELECT COUNT(*) FROM intents WHERE connection_id = $1 \
     AND (path = $2 OR source_path = $2) AND outcome IS NULL";

impl Store {
    /// Records `intent` before its change is made, for `made_by` (the
    /// spoke it is recorded for, `None` for the hub's own); its id, for the
    /// change's commit. Needs the primary, as the commit does.
    ///
    /// One change per path at a time, and only to the version it began
    /// with: `WriteConflict` while another intent changing or reading the
    /// path is unsettled, or when the path's record is no longer the
    /// version the intent replaces; the same for a source the change reads
    /// (another change to it under way, or recorded since it was read).
    /// Checked and recorded under a lock on each path, taken in order
    /// (PostgreSQL; SQLite's writers are serial), so two hubs cannot both
    /// pass.
    pub async fn record_intent(
        &self,
        intent: &Intent,
        made_by: Option<&str>,
    ) -> Result<String, StoreError> {
        let mut tx = self.write_tx().await?;
        let id = self.intend_in(&mut tx, intent, made_by, true).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Records `intents` (of one connection) in one transaction, each for
    /// whatever version of its path is recorded then (their `replaces` is
    /// not checked: a folder's deletion takes what is there); their ids,
    /// in order. `WriteConflict`, and none recorded, while a change to any
    /// of their paths is under way.
    pub async fn record_intents(
        &self,
        intents: &[Intent],
        made_by: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        // Taken in path order, as every writer takes them.
        let mut order: Vec<usize> = (0..intents.len()).collect();
        order.sort_unstable_by(|&a, &b| intents[a].path.cmp(&intents[b].path));
        let mut ids = vec![String::new(); intents.len()];
        let mut tx = self.write_tx().await?;
        for i in order {
            ids[i] = self.intend_in(&mut tx, &intents[i], made_by, false).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// [`Store::record_intent`]'s checks and insertion inside `tx`;
    /// `check_version`: whether `intent.replaces` must still be the
    /// path's recorded version.
    async fn intend_in(
        &self,
        tx: &mut super::WriteTx<'_>,
        intent: &Intent,
        made_by: Option<&str>,
        check_version: bool,
    ) -> Result<String, StoreError> {
        let id = new_id("int");
        let conn = intent.connection_id.as_str();
        let mut paths = vec![intent.path.as_str()];
        paths.extend(intent.source.as_ref().map(|(p, _)| p.as_str()));
        paths.sort_unstable();
        for p in &paths {
            self.serialise(tx, &format!("intent:{conn}/{p}")).await?;
        }
        let generation = async |tx: &mut super::WriteTx<'_>, path: &str| {
            sqlx::query_scalar::<_, i64>(
                "SELECT generation FROM objects WHERE connection_id = $1 AND path = $2",
            )
            .bind(conn)
            .bind(path)
            .fetch_optional(&mut **tx)
            .await
            .map(|g| g.unwrap_or(0))
        };
        let under_way: i64 = sqlx::query_scalar(UNDER_WAY)
            .bind(conn)
            .bind(&intent.path)
            .fetch_one(&mut **tx)
            .await?;
        if under_way > 0 {
            return Err(StoreError::WriteConflict(Conflicting::UnderWay));
        }
        if check_version && generation(tx, &intent.path).await? != intent.replaces {
            return Err(StoreError::WriteConflict(Conflicting::Recorded));
        }
        if let Some((source, read)) = &intent.source {
            // Another reader of the source may go on; a writer of it not.
            let changing: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM intents WHERE connection_id = $1 AND path = $2 \
                 AND outcome IS NULL",
            )
            .bind(conn)
            .bind(source)
            .fetch_one(&mut **tx)
            .await?;
            if changing > 0 {
                return Err(StoreError::WriteConflict(Conflicting::UnderWay));
            }
            if generation(tx, source).await? != *read {
                return Err(StoreError::WriteConflict(Conflicting::Recorded));
            }
        }
        sqlx::query(
            "INSERT INTO intents (id, connection_id, path, expect_size, expect_crc, change, \
             absent_path, source_path, made_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&id)
        .bind(conn)
        .bind(&intent.path)
        .bind(intent.expect.map(|(size, _)| size as i64))
        .bind(intent.expect.map(|(_, crc)| crc as i64))
        .bind(serde_json::to_string(&intent.change).expect("a commit serialises"))
        .bind(intent.also_absent.as_deref())
        .bind(intent.source.as_ref().map(|(p, _)| p.as_str()))
        .bind(made_by)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(id)
    }

    /// Settles intent `id`, made for `path` of `connection_id`, inside a
    /// commit's transaction, and says how it found it ([`Found`]). An id
    /// that names no intent for that path settles nothing.
    pub(super) async fn settle_by_commit(
        tx: &mut super::WriteTx<'_>,
        id: &str,
        (connection_id, path): (&str, &str),
    ) -> Result<Found, sqlx::Error> {
        let outcome: Option<Option<String>> = sqlx::query_scalar(
            "DELETE FROM intents WHERE id = $1 AND connection_id = $2 AND path = $3 \
             RETURNING outcome",
        )
        .bind(id)
        .bind(connection_id)
        .bind(path)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(match outcome {
            Some(None) => Found::Held,
            Some(Some(o)) if o == Outcome::Applied.as_str() => Found::Applied,
            _ => Found::Lapsed,
        })
    }

    /// Who recorded intent `id`: `None` when there is no such intent,
    /// `Some(None)` for a hub's own, `Some(Some(spoke))` for a spoke's.
    pub async fn intent_made_by(&self, id: &str) -> Result<Option<Option<String>>, StoreError> {
        self.refuse_if_down()?;
        Ok(
            sqlx::query_scalar("SELECT made_by FROM intents WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Intent `id`'s writer gave it up (its provider write failed): looked
    /// at now, and dropped from `drop_at` (Unix ms) on if the provider
    /// does not hold its change.
    pub async fn abandon_intent(&self, id: &str, drop_at: i64) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE intents SET drop_at = $1, next_try_at = 0 WHERE id = $2 AND outcome IS NULL",
        )
        .bind(drop_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
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
            source: None,
            conditional: false,
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
            source: None,
            conditional: false,
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
        let (account, _) = crate::store::testing::account_with_connection(&store, "con_1").await;
        let upload = |path: &str, replaces: i64| upload(&account, path, replaces);
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
        let id = store.record_intent(&first, None).await.unwrap();
        assert_eq!(
            refused(store.record_intent(&upload("x", 0), None).await),
            Conflicting::UnderWay
        );
        assert!(
            store.record_intent(&upload("y", 0), None).await.is_ok(),
            "other paths are not held up"
        );
        commit(&first, id).await;
        let g1 = generation().await;
        assert!(g1 > 0);
        assert_eq!(
            refused(store.record_intent(&upload("x", 0), None).await),
            Conflicting::Recorded
        );

        // One that began after it goes on, and makes a newer version.
        let second = upload("x", g1);
        let id = store.record_intent(&second, None).await.unwrap();
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
        // (Both from a node whose clock is a minute behind: the change
        // whose intent it settles is the path's next version all the same.)
        let mut delete = intent(&account, "x");
        delete.replaces = g2;
        delete.change.remove = vec![("con_1".into(), "x".into())];
        delete.change.event.as_mut().unwrap().at -= 60_000;
        let id = store.record_intent(&delete, None).await.unwrap();
        commit(&delete, id).await;
        assert_eq!(generation().await, 0);
        let mut again = upload("x", 0);
        again.change.upsert.as_mut().unwrap().updated_at -= 60_000;
        let id = store.record_intent(&again, Some("fra1")).await.unwrap();
        assert_eq!(
            store.intent_made_by(&id).await.unwrap(),
            Some(Some("fra1".to_owned()))
        );
        commit(&again, id).await;
        let g3 = generation().await;
        assert!(g3 > g2);

        // A copy reading "x" holds it: no change to "x" is taken while the
        // copy is under way (another reader may go on), and a copy of a
        // version of "x" older than the record is refused.
        let reading = |to: &str, read: i64| {
            let mut copy = upload(to, 0);
            copy.source = Some(("x".into(), read));
            copy
        };
        let copy = reading("c", g3);
        let id = store.record_intent(&copy, None).await.unwrap();
        assert_eq!(
            refused(store.record_intent(&upload("x", g3), None).await),
            Conflicting::UnderWay
        );
        assert!(store.record_intent(&reading("d", g3), None).await.is_ok());
        commit(&copy, id).await;
        assert_eq!(
            refused(store.record_intent(&reading("e", g2), None).await),
            Conflicting::Recorded
        );
        let writing_c = upload("c", 0);
        assert_eq!(
            refused(store.record_intent(&writing_c, None).await),
            Conflicting::Recorded,
            "the copy made a version of c"
        );

        // An intent settled without its commit (dropped) frees the path.
        let later = now_ms() + 1_000;
        let third = upload("z", 0);
        let id = store.record_intent(&third, None).await.unwrap();
        assert_eq!(
            refused(store.record_intent(&upload("z", 0), None).await),
            Conflicting::UnderWay
        );
        store
            .settle_intent(&id, Outcome::Dropped, &third.change)
            .await
            .unwrap();
        assert!(store.record_intent(&upload("z", 0), None).await.is_ok());
        assert!(store.pending_intents(later, later, 10).await.unwrap().len() >= 2);
    }

    #[tokio::test]
    async fn each_change_is_recorded_once_whoever_settles_it() {
        let (store, _dir) = store().await;
        let events = async || store.list_events("acc_1", 0, 100).await.unwrap().len();
        let later = now_ms() + 1_000;

        // Settled by its commit: nothing left to settle.
        let a = intent("acc_1", "a");
        let id = store.record_intent(&a, None).await.unwrap();
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
        let id = store.record_intent(&b, None).await.unwrap();
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
        let id = store.record_intent(&c, None).await.unwrap();
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
        let id = store.record_intent(&d, None).await.unwrap();
        assert!(
            store
                .settle_intent(&id, Outcome::Dropped, &d.change)
                .await
                .unwrap()
                .is_some()
        );
        let e = intent("acc_1", "e");
        store.record_intent(&e, None).await.unwrap();
        assert_eq!(store.forget_intents(later).await.unwrap(), 1);
        let pending = store.pending_intents(later, later, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].intent.path, "e");
    }
}
