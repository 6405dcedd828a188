//! Usage metering: what each account moved and asked for, per hour, per
//! node (`hub` or a spoke's name) and per connection (`usage_hourly`).
//!
//! Bytes and transfers are added in the transaction that logs each
//! transfer ([`add_transfers`], called by `insert_transfers`): a spoke's
//! report is logged once (`applied_reports`), so a report sent again after
//! a crash is not counted again, and the figures always add up to the
//! transfer log. Requests the hub answered are counted in memory and added
//! every few seconds ([`Store::add_requests`]); a hub that crashes loses
//! at most that many seconds of them.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row as _;

use super::{Store, StoreError};
use ferry_common::content::model::{Direction, Transfer};

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// The start of the hour holding `at` (unix ms).
pub fn hour_of(at: i64) -> i64 {
    at - at.rem_euclid(HOUR_MS)
}

/// The figures of one row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Bytes clients sent into providers.
    pub bytes_in: i64,
    /// Bytes sent from providers to clients.
    pub bytes_out: i64,
    /// Uploads (complete or not).
    pub uploads: i64,
    /// Downloads (complete or not).
    pub downloads: i64,
    /// API requests the hub answered that read (`GET`, `HEAD`).
    pub requests_read: i64,
    /// API requests the hub answered that change or make something.
    pub requests_write: i64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.uploads += o.uploads;
        self.downloads += o.downloads;
        self.requests_read += o.requests_read;
        self.requests_write += o.requests_write;
    }
}

/// A row of `usage_hourly`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The account.
    pub account_id: String,
    /// The hour's start, unix ms.
    pub hour: i64,
    /// `hub` or a spoke's name.
    pub node: String,
    /// The connection; empty for requests about none.
    pub connection_id: String,
    /// What was used.
    pub figures: Figures,
}

/// Requests counted in memory, per (account, hour, node): (reads, writes).
pub type RequestCounts = BTreeMap<(String, i64, String), (i64, i64)>;

const UPSERT: &str = "INSERT INTO usage_hourly (account_id, hour, node, connection_id, bytes_in, \
     bytes_out, uploads, downloads, requests_read, requests_write) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (account_id, hour, node, connection_id) DO UPDATE SET \
     bytes_in = usage_hourly.bytes_in + excluded.bytes_in, \
     bytes_out = usage_hourly.bytes_out + excluded.bytes_out, \
     uploads = usage_hourly.uploads + excluded.uploads, \
     downloads = usage_hourly.downloads + excluded.downloads, \
     requests_read = usage_hourly.requests_read + excluded.requests_read, \
     requests_write = usage_hourly.requests_write + excluded.requests_write";

async fn upsert(conn: &mut sqlx::AnyConnection, r: &UsageRow) -> Result<(), sqlx::Error> {
    let f = &r.figures;
    sqlx::query(UPSERT)
        .bind(&r.account_id)
        .bind(r.hour)
        .bind(&r.node)
        .bind(&r.connection_id)
        .bind(f.bytes_in)
        .bind(f.bytes_out)
        .bind(f.uploads)
        .bind(f.downloads)
        .bind(f.requests_read)
        .bind(f.requests_write)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds `transfers` to the usage, on `conn` (the transaction that logs
/// them), one row per (account, hour of its start, node, connection).
pub(super) async fn add_transfers(
    conn: &mut sqlx::AnyConnection,
    transfers: &[Transfer],
) -> Result<(), sqlx::Error> {
    let mut rows: BTreeMap<(&str, i64, &str, &str), Figures> = BTreeMap::new();
    for t in transfers {
        let f = rows
            .entry((
                &t.account_id,
                hour_of(t.started_at),
                &t.via,
                &t.connection_id,
            ))
            .or_default();
        match t.direction {
            Direction::Upload => {
                f.bytes_in += t.bytes;
                f.uploads += 1;
            }
            Direction::Download => {
                f.bytes_out += t.bytes;
                f.downloads += 1;
            }
        }
    }
    for ((account, hour, node, conn_id), figures) in rows {
        let row = UsageRow {
            account_id: account.to_owned(),
            hour,
            node: node.to_owned(),
            connection_id: conn_id.to_owned(),
            figures,
        };
        upsert(&mut *conn, &row).await?;
    }
    Ok(())
}

impl Store {
    /// Adds requests counted in memory, in one transaction.
    pub async fn add_requests(&self, counts: &RequestCounts) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for ((account, hour, node), (read, write)) in counts {
            let row = UsageRow {
                account_id: account.clone(),
                hour: *hour,
                node: node.clone(),
                connection_id: String::new(),
                figures: Figures {
                    requests_read: *read,
                    requests_write: *write,
                    ..Figures::default()
                },
            };
            upsert(&mut tx, &row).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The usage rows of `account` (every account when `None`) for the
    /// hours starting in [`from`, `to`) (unix ms).
    pub async fn usage_rows(
        &self,
        account: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, hour, node, connection_id, bytes_in, bytes_out, uploads, \
             downloads, requests_read, requests_write FROM usage_hourly \
             WHERE ($1 = '' OR account_id = $1) AND hour >= $2 AND hour < $3 \
             ORDER BY hour, account_id, node, connection_id",
        )
        .bind(account.unwrap_or(""))
        .bind(from)
        .bind(to)
        .fetch_all(self.read_pool().await)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    account_id: r.try_get("account_id")?,
                    hour: r.try_get("hour")?,
                    node: r.try_get("node")?,
                    connection_id: r.try_get("connection_id")?,
                    figures: Figures {
                        bytes_in: r.try_get("bytes_in")?,
                        bytes_out: r.try_get("bytes_out")?,
                        uploads: r.try_get("uploads")?,
                        downloads: r.try_get("downloads")?,
                        requests_read: r.try_get("requests_read")?,
                        requests_write: r.try_get("requests_write")?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::Database)
    }

    /// What `account` (every account when `None`) stores now, per
    /// connection, as ferry recorded it: (account, connection, objects,
    /// bytes).
    pub async fn stored(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<(String, String, i64, i64)>, StoreError> {
        let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT c.account_id, c.id, COUNT(o.path), CAST(SUM(o.size) AS BIGINT) FROM connections c \
             LEFT JOIN objects o ON o.connection_id = c.id \
             WHERE ($1 = '' OR c.account_id = $1) GROUP BY c.account_id, c.id \
             ORDER BY c.account_id, c.id",
        )
        .bind(account.unwrap_or(""))
        .fetch_all(self.read_pool().await)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(a, c, n, b)| (a, c, n, b.unwrap_or(0)))
            .collect())
    }
}

/// Sums `rows` into buckets by `key`, in the order of the keys.
pub fn grouped<K: Ord>(rows: &[UsageRow], key: impl Fn(&UsageRow) -> K) -> Vec<(K, Figures)> {
    let mut out: BTreeMap<K, Figures> = BTreeMap::new();
    for r in rows {
        out.entry(key(r)).or_default().add(&r.figures);
    }
    out.into_iter().collect()
}
