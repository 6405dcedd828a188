//! Copying a hub's metadata from one store into another: how a single hub
//! on SQLite moves to PostgreSQL (`ferry-hub migrate-store`).
//!
//! Every table that holds metadata is copied row by row in the order its
//! foreign keys need, in one transaction on the target, with row ids kept
//! (events keep their global ids and their per-account numbers, so
//! clients' cursors stay valid, and transfers their ids) and the target's
//! id sequences moved past them. Tables of
//! short-lived state (recent writes, the hubs' announcements, the steering
//! exchange) are left behind: the hubs rebuild them.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Dialect, Store, StoreError, placeholders};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Int,
    Blob,
}

use Kind::{Blob, Int, Text};

/// The tables copied, parents first, with their columns.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "accounts",
        &[("id", Text), ("name", Text), ("created_at", Int)],
    ),
    (
        "api_keys",
        &[
            ("id", Text),
            ("account_id", Text),
            ("hash", Blob),
            ("prefix", Text),
            ("created_at", Int),
            ("revoked_at", Int),
        ],
    ),
    (
        "connections",
        &[
            ("id", Text),
            ("account_id", Text),
            ("name", Text),
            ("provider", Text),
            ("config_sealed", Blob),
            ("created_at", Int),
            ("scan_interval_secs", Int),
        ],
    ),
    (
        "location_claims",
        &[
            ("location", Text),
            ("account_id", Text),
            ("created_at", Int),
        ],
    ),
    (
        "objects",
        &[
            ("connection_id", Text),
            ("path", Text),
            ("size", Int),
            ("crc64nvme", Int),
            ("sha256", Blob),
            ("content_type", Text),
            ("etag", Text),
            ("provider_modified_ms", Int),
            ("updated_at", Int),
            ("headers", Text),
            ("generation", Int),
        ],
    ),
    (
        "transfers",
        &[
            ("id", Int),
            ("account_id", Text),
            ("connection_id", Text),
            ("path", Text),
            ("direction", Text),
            ("status", Text),
            ("bytes", Int),
            ("crc64nvme", Int),
            ("via", Text),
            ("started_at", Int),
            ("duration_ms", Int),
        ],
    ),
    (
        "events",
        &[
            ("id", Int),
            ("account_id", Text),
            ("connection_id", Text),
            ("kind", Text),
            ("path", Text),
            ("from_path", Text),
            ("size", Int),
            ("at", Int),
            ("seq", Int),
            ("origin", Text),
        ],
    ),
    (
        "entries",
        &[
            ("connection_id", Text),
            ("parent", Text),
            ("name", Text),
            ("size", Int),
            ("etag", Text),
            ("modified_ns", Int),
            ("rev", Int),
        ],
    ),
    // With the lease of a hub that is stopped while the store is copied:
    // it lapses, and the hubs on the new store take the scans over.
    (
        "index_state",
        &[
            ("connection_id", Text),
            ("complete", Int),
            ("next_scan_at", Int),
            ("last_scan_at", Int),
            ("last_scan_size", Int),
            ("holder", Text),
            ("held_until", Int),
        ],
    ),
    (
        "spokes",
        &[
            ("name", Text),
            ("token_hash", Blob),
            ("token_expires_at", Int),
            ("cert_sha256", Blob),
            ("enrolled_at", Int),
            ("revoked_at", Int),
            ("created_at", Int),
            ("allowed_public", Text),
            ("prev_cert_sha256", Blob),
            ("cert_seen", Int),
        ],
    ),
    (
        "spoke_fleets",
        &[
            ("id", Text),
            ("prefix", Text),
            ("token_hash", Blob),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("created_at", Int),
            ("allowed_public", Text),
        ],
    ),
    (
        "tunnel_ca",
        &[
            ("id", Int),
            ("cert_pem", Text),
            ("key_sealed", Blob),
            ("created_at", Int),
        ],
    ),
    (
        "upload_sessions",
        &[
            ("id", Text),
            ("account_id", Text),
            ("connection_id", Text),
            ("path", Text),
            ("length", Int),
            ("committed", Int),
            ("crc64nvme", Int),
            ("metadata", Text),
            ("content_type", Text),
            ("concat", Text),
            ("status", Text),
            ("lease_holder", Text),
            ("lease_token", Text),
            ("lease_until", Int),
            ("expires_at", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("provider_upload", Text),
            ("s3_upload", Text),
            ("s3_part", Int),
        ],
    ),
    (
        "s3_multipart",
        &[
            ("id", Text),
            ("account_id", Text),
            ("connection_id", Text),
            ("object_key", Text),
            ("content_type", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("headers", Text),
        ],
    ),
    (
        "s3_keys",
        &[
            ("id", Text),
            ("account_id", Text),
            ("secret_sealed", Blob),
            ("connections", Text),
            ("read_only", Int),
            ("created_at", Int),
            ("revoked_at", Int),
        ],
    ),
    (
        "upload_parts",
        &[
            ("upload_id", Text),
            ("first_byte", Int),
            ("size", Int),
            ("crc64nvme", Int),
            ("name", Text),
            ("native", Text),
        ],
    ),
    // Reports a spoke may send again after the move are still applied once.
    ("applied_reports", &[("id", Text), ("applied_at", Int)]),
    // Where each account's feed begins after events removed for their age.
    (
        "event_horizons",
        &[("account_id", Text), ("purged_through", Int)],
    ),
    // Changes whose record may still have to be settled.
    (
        "intents",
        &[
            ("id", Text),
            ("connection_id", Text),
            ("path", Text),
            ("expect_size", Int),
            ("expect_crc", Int),
            ("change", Text),
            ("absent_path", Text),
            ("outcome", Text),
            ("created_at", Int),
            ("next_try_at", Int),
            ("source_path", Text),
            ("made_by", Text),
            ("drop_at", Int),
        ],
    ),
    // Webhook endpoints, their deliveries (pending ones are the outbox)
    // and the attempts made.
    (
        "webhook_endpoints",
        &[
            ("id", Text),
            ("account_id", Text),
            ("url", Text),
            ("event_types", Text),
            ("description", Text),
            ("secret_sealed", Blob),
            ("old_secret_sealed", Blob),
            ("old_secret_until", Int),
            ("created_at", Int),
            ("disabled_at", Int),
            ("disabled_why", Text),
        ],
    ),
    (
        "webhook_deliveries",
        &[
            ("id", Int),
            ("msg_id", Text),
            ("endpoint_id", Text),
            ("account_id", Text),
            ("event_type", Text),
            ("payload", Text),
            ("created_at", Int),
            ("state", Text),
            ("attempts", Int),
            ("round_from", Int),
            ("next_at", Int),
            ("lease_holder", Text),
            ("lease_until", Int),
            ("last_status", Int),
            ("last_error", Text),
            ("done_at", Int),
        ],
    ),
    (
        "webhook_attempts",
        &[
            ("delivery_id", Int),
            ("attempt", Int),
            ("at", Int),
            ("status", Int),
            ("error", Text),
            ("latency_ms", Int),
            ("sent_by", Text),
        ],
    ),
    // What each account used, per hour, node and connection.
    (
        "usage_hourly",
        &[
            ("account_id", Text),
            ("hour", Int),
            ("node", Text),
            ("connection_id", Text),
            ("bytes_in", Int),
            ("bytes_out", Int),
            ("uploads", Int),
            ("downloads", Int),
            ("requests_read", Int),
            ("requests_write", Int),
        ],
    ),
    // Each account's quotas and limits, where the operator set them.
    (
        "account_limits",
        &[
            ("account_id", Text),
            ("stored_bytes", Int),
            ("egress_bytes_per_month", Int),
            ("requests_per_second", Int),
            ("upload_bytes_per_second", Int),
            ("download_bytes_per_second", Int),
            ("updated_at", Int),
        ],
    ),
];

/// Tables whose `id` the database numbers.
const NUMBERED: &[&str] = &["transfers", "events", "webhook_deliveries"];

/// Tables not copied, on purpose.
#[cfg(test)]
const LEFT_BEHIND: &[&str] = &[
    "ferry_schema",
    "recent_writes",
    "hubs",
    "steering_presence",
    "steering_samples",
    // One row its migration makes; a new store's caches start empty.
    "cache_epoch",
];

/// Rows read and written at a time.
const BATCH: i64 = 500;

/// What a copy did.
#[derive(Debug, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Rows copied, per table.
    Copied(Vec<(&'static str, u64)>),
    /// The target already holds rows in this table; nothing was copied.
    TargetNotEmpty(&'static str),
}

enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Blob(Option<Vec<u8>>),
}

fn value(row: &AnyRow, i: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Text => Value::Text(row.try_get(i)?),
        Int => Value::Int(row.try_get(i)?),
        Blob => Value::Blob(row.try_get(i)?),
    })
}

impl Store {
    /// Copies every metadata table of this store into `target`, which
    /// must hold none of it yet, and `tunnel_ca` when given, in one
    /// transaction on `target`;
    /// `progress(table, rows so far)` is called after each batch.
    pub async fn copy_into(
        &self,
        target: &Store,
        tunnel_ca: Option<(&str, &[u8])>,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<CopyOutcome, StoreError> {
        let mut tx = target.write_tx().await?;
        for (table, _) in TABLES {
            let any: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT 1 FROM {table} LIMIT 1"
            )))
            .fetch_optional(&mut *tx)
            .await?;
            if any.is_some() {
                return Ok(CopyOutcome::TargetNotEmpty(table));
            }
        }
        let mut copied = Vec::with_capacity(TABLES.len());
        for (table, columns) in TABLES {
            let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
            let names = names.join(", ");
            // Keyset pages over SQLite's rowid: every table here has one.
            let select = format!(
                "SELECT rowid, {names} FROM {table} WHERE rowid > $1 ORDER BY rowid LIMIT {BATCH}"
            );
            let (mut after, mut count) = (i64::MIN, 0u64);
            loop {
                let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                    .bind(after)
                    .fetch_all(&self.pool)
                    .await?;
                let Some(last) = rows.last() else {
                    break;
                };
                after = last.try_get(0)?;
                let insert = format!(
                    "INSERT INTO {table} ({names}) VALUES {}",
                    placeholders(rows.len(), columns.len())
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(insert));
                for row in &rows {
                    for (i, (_, kind)) in columns.iter().enumerate() {
                        q = match value(row, i + 1, *kind)? {
                            Value::Text(v) => q.bind(v),
                            Value::Int(v) => q.bind(v),
                            Value::Blob(v) => q.bind(v),
                        };
                    }
                }
                q.execute(&mut *tx).await?;
                count += rows.len() as u64;
                progress(table, count);
            }
            if NUMBERED.contains(table) && target.backend() == Dialect::Postgres {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)::text"
                )))
                .fetch_one(&mut *tx)
                .await?;
            }
            copied.push((*table, count));
        }
        // A SQLite hub keeps its CA in files: it joins the copy here, in
        // the same transaction (certificate PEM, key sealed for the store).
        if let Some((cert_pem, key_sealed)) = tunnel_ca {
            sqlx::query(
                "INSERT INTO tunnel_ca (id, cert_pem, key_sealed, created_at) VALUES (1, $1, $2, $3)",
            )
            .bind(cert_pem)
            .bind(key_sealed)
            .bind(super::now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(CopyOutcome::Copied(copied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column of every table of the newest schema is either copied
    /// or left behind on purpose: a migration that adds one must say which.
    #[tokio::test]
    async fn the_copy_covers_the_whole_schema() {
        let (store, _dir) = crate::store::testing::store().await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        for table in &tables {
            if LEFT_BEHIND.contains(&table.as_str()) {
                continue;
            }
            let (_, columns) = TABLES
                .iter()
                .find(|(t, _)| t == table)
                .unwrap_or_else(|| panic!("table {table} is neither copied nor left behind"));
            let in_schema: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
            )))
            .fetch_all(&store.pool)
            .await
            .unwrap();
            let copied: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
            assert_eq!(in_schema, copied, "the columns of {table}");
        }
        for (t, _) in TABLES {
            assert!(tables.iter().any(|x| x == t), "{t} is not in the schema");
        }
    }

    #[tokio::test]
    async fn a_copy_keeps_every_row_and_its_id_and_refuses_a_used_target() {
        let (from, _a) = crate::store::testing::store().await;
        let (to, _b) = crate::store::testing::store().await;
        let (account, _) = from.create_account("alpha").await.unwrap();
        let key = from.create_key(&account.id).await.unwrap().unwrap();
        from.add_spoke("fra1", 60_000, None).await.unwrap();
        let mut seen = Vec::new();
        let outcome = from
            .copy_into(&to, None, |t, n| seen.push((t.to_owned(), n)))
            .await
            .unwrap();
        let CopyOutcome::Copied(counts) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(counts.contains(&("accounts", 1)) && counts.contains(&("spokes", 1)));
        assert!(seen.contains(&("api_keys".to_owned(), 2)), "{seen:?}");
        assert_eq!(
            to.authenticate(&key.key).await.unwrap(),
            Some(account.id.clone())
        );
        assert_eq!(to.list_spokes().await.unwrap().len(), 1);
        assert_eq!(
            from.copy_into(&to, None, |_, _| {}).await.unwrap(),
            CopyOutcome::TargetNotEmpty("accounts")
        );
    }
}
