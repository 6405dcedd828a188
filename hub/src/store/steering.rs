//! Steering state that hubs sharing a store exchange through it: which
//! spokes each hub hears (and what they announced), and the client probe
//! samples each hub took. Rows are keyed by the writing hub's id and
//! stamped with its wall clock; both tables only ever hold the last few
//! minutes.

use super::{Store, StoreError, placeholders};

/// A spoke as one hub hears it.
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    /// The spoke.
    pub spoke: String,
    /// Its `SteeringAnnounce`, as JSON, when it announced one.
    pub announce: Option<String>,
    /// Transfers it reported streaming.
    pub active_transfers: u64,
    /// Whether it said it is shutting down.
    pub draining: bool,
    /// When the hub last heard it (Unix milliseconds).
    pub heard_at: i64,
    /// The round-trip time of its tunnel to that hub, milliseconds (QUIC;
    /// `None` over TCP).
    pub rtt_ms: Option<u64>,
}

/// Reads a presence row: spoke, announce, active_transfers, draining,
/// heard_at, rtt_ms.
type PresenceRow = (String, Option<String>, i64, i64, i64, Option<i64>);

fn presence_of(row: PresenceRow) -> Presence {
    let (spoke, announce, active, draining, heard_at, rtt) = row;
    Presence {
        spoke,
        announce,
        active_transfers: u64::try_from(active).unwrap_or(0),
        draining: draining != 0,
        heard_at,
        rtt_ms: rtt.and_then(|r| u64::try_from(r).ok()),
    }
}

/// A client probe sample one hub took.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSample {
    /// Its row id (to take each sample once).
    pub id: i64,
    /// The spoke probed.
    pub spoke: String,
    /// The client's address.
    pub client: String,
    /// The round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// When the hub took it (Unix milliseconds).
    pub at: i64,
}

/// Rows per statement: far under PostgreSQL's 65535 bound parameters.
const CHUNK: usize = 500;

impl Store {
    /// Replaces what hub `hub` hears with `spokes`.
    pub async fn put_presence(&self, hub: &str, spokes: &[Presence]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM steering_presence WHERE hub_id = $1")
            .bind(hub)
            .execute(&mut *tx)
            .await?;
        for chunk in spokes.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO steering_presence \
                 (hub_id, spoke, announce, active_transfers, draining, heard_at, rtt_ms) VALUES {}",
                placeholders(chunk.len(), 7)
            );
            // Only numbered placeholders are formatted in.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for p in chunk {
                q = q
                    .bind(hub)
                    .bind(&p.spoke)
                    .bind(&p.announce)
                    .bind(i64::try_from(p.active_transfers).unwrap_or(i64::MAX))
                    .bind(i64::from(p.draining))
                    .bind(p.heard_at)
                    .bind(p.rtt_ms.map(|r| i64::try_from(r).unwrap_or(i64::MAX)));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The spokes the other hubs heard since `since` (Unix milliseconds).
    pub async fn others_presence(
        &self,
        hub: &str,
        since: i64,
    ) -> Result<Vec<Presence>, StoreError> {
        let rows = sqlx::query_as::<_, PresenceRow>(
            "SELECT spoke, announce, active_transfers, draining, heard_at, rtt_ms \
             FROM steering_presence WHERE hub_id <> $1 AND heard_at > $2",
        )
        .bind(hub)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(presence_of).collect())
    }

    /// The spokes each hub heard since `since` (Unix milliseconds), as
    /// (hub id, presence), by hub and spoke: for the operator's list of
    /// hubs.
    pub async fn presence_by_hub(&self, since: i64) -> Result<Vec<(String, Presence)>, StoreError> {
        let rows =
            sqlx::query_as::<_, (String, String, Option<String>, i64, i64, i64, Option<i64>)>(
                "SELECT hub_id, spoke, announce, active_transfers, draining, heard_at, rtt_ms \
             FROM steering_presence WHERE heard_at > $1 ORDER BY hub_id, spoke",
            )
            .bind(since)
            .fetch_all(self.read_pool().await)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(hub, spoke, announce, active, draining, heard_at, rtt)| {
                (
                    hub,
                    presence_of((spoke, announce, active, draining, heard_at, rtt)),
                )
            })
            .collect())
    }

    /// Records probe samples hub `hub` took: (spoke, client, rtt_ms, at).
    pub async fn add_samples(
        &self,
        hub: &str,
        samples: &[(String, String, f64, i64)],
    ) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for chunk in samples.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO steering_samples (hub_id, spoke, client, rtt_ms, at) VALUES {}",
                placeholders(chunk.len(), 5)
            );
            // Only numbered placeholders are formatted in.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (spoke, client, ms, at) in chunk {
                q = q.bind(hub).bind(spoke).bind(client).bind(*ms).bind(*at);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The samples other hubs took since `since` (Unix milliseconds), at
    /// most `limit`, oldest first.
    pub async fn others_samples(
        &self,
        hub: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<SharedSample>, StoreError> {
        let rows = sqlx::query_as::<_, (i64, String, String, f64, i64)>(
            "SELECT id, spoke, client, rtt_ms, at FROM steering_samples \
             WHERE hub_id <> $1 AND at > $2 ORDER BY at, id LIMIT CAST($3 AS BIGINT)",
        )
        .bind(hub)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, spoke, client, rtt_ms, at)| SharedSample {
                id,
                spoke,
                client,
                rtt_ms,
                at,
            })
            .collect())
    }

    /// Forgets samples taken and presence heard before `before` (Unix
    /// milliseconds), whichever hub wrote them.
    pub async fn expire_steering(&self, before: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM steering_samples WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM steering_presence WHERE heard_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::now_ms;

    fn presence(spoke: &str, heard_at: i64) -> Presence {
        Presence {
            spoke: spoke.into(),
            announce: Some(r#"{"public_addrs":["192.0.2.1"]}"#.into()),
            active_transfers: 3,
            draining: false,
            heard_at,
            rtt_ms: Some(7),
        }
    }

    #[tokio::test]
    async fn presence_and_samples_round_trip_and_expire() {
        let (store, _dir) = crate::store::testing::store().await;
        let now = now_ms();
        store
            .put_presence("hub_a", &[presence("fra1", now), presence("ams1", now - 5)])
            .await
            .unwrap();
        // A second write replaces the first.
        store
            .put_presence("hub_a", &[presence("fra1", now)])
            .await
            .unwrap();
        store
            .put_presence("hub_b", &[presence("nyc1", now)])
            .await
            .unwrap();
        let seen_by_b = store.others_presence("hub_b", now - 1000).await.unwrap();
        assert_eq!(seen_by_b, vec![presence("fra1", now)]);
        let mut over_tcp = presence("lhr1", now);
        over_tcp.rtt_ms = None;
        store
            .put_presence("hub_c", &[over_tcp.clone()])
            .await
            .unwrap();
        assert_eq!(
            store.presence_by_hub(now - 1000).await.unwrap(),
            vec![
                ("hub_a".to_owned(), presence("fra1", now)),
                ("hub_b".to_owned(), presence("nyc1", now)),
                ("hub_c".to_owned(), over_tcp),
            ]
        );
        assert!(
            store
                .others_presence("hub_b", now)
                .await
                .unwrap()
                .is_empty(),
            "older than asked"
        );

        let samples: Vec<_> = (0..3)
            .map(|i| {
                (
                    "fra1".to_owned(),
                    "192.0.2.9".to_owned(),
                    10.5 + f64::from(i),
                    now + i64::from(i),
                )
            })
            .collect();
        store.add_samples("hub_a", &samples).await.unwrap();
        store.add_samples("hub_a", &[]).await.unwrap();
        let got = store.others_samples("hub_b", now - 1, 2).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].rtt_ms, got[1].rtt_ms), (10.5, 11.5));
        assert!(got[0].id != got[1].id);
        assert!(
            store
                .others_samples("hub_a", 0, 10)
                .await
                .unwrap()
                .is_empty()
        );

        store.expire_steering(now + 2).await.unwrap();
        assert_eq!(store.others_samples("hub_b", 0, 10).await.unwrap().len(), 1);
        assert!(store.others_presence("hub_a", 0).await.unwrap().is_empty());
    }
}
