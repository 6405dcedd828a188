//! Each account's quotas and limits, as the operator set them
//! (`account_limits`); a member left unset takes the configuration's
//! default (see `crate::limits`).

use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use super::{Store, StoreError, now_ms};

/// Quotas and limits; `None`: not set here (the default applies). `0`
/// means no limit, to lift a default for one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Bytes the account may store, over all its connections.
    #[serde(default, deserialize_with = "whole")]
    pub stored_bytes: Option<i64>,
    /// Bytes the account may download in a calendar month (UTC).
    #[serde(default, deserialize_with = "whole")]
    pub egress_bytes_per_month: Option<i64>,
    /// API requests per second at each hub.
    #[serde(default, deserialize_with = "whole")]
    pub requests_per_second: Option<i64>,
    /// Upload bytes per second at each node, all transfers together.
    #[serde(default, deserialize_with = "whole")]
    pub upload_bytes_per_second: Option<i64>,
    /// Download bytes per second at each node, all transfers together.
    #[serde(default, deserialize_with = "whole")]
    pub download_bytes_per_second: Option<i64>,
}

/// A whole number, written as JSON writes numbers: `5`, or `5.0` as a
/// JavaScript client may send it; a fraction is refused.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let n: Option<serde_json::Number> = Option::deserialize(d)?;
    let Some(n) = n else { return Ok(None) };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Some(f as i64)),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a whole number of at most 63 bits"
        ))),
    }
}

impl Limits {
    /// The names of the members that are negative.
    pub fn negative(&self) -> impl Iterator<Item = &'static str> {
        [
            ("stored_bytes", self.stored_bytes),
            ("egress_bytes_per_month", self.egress_bytes_per_month),
            ("requests_per_second", self.requests_per_second),
            ("upload_bytes_per_second", self.upload_bytes_per_second),
            ("download_bytes_per_second", self.download_bytes_per_second),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some_and(|n| n < 0))
        .map(|(name, _)| name)
    }

    /// Each member of `self`, or of `defaults` where `self` has none.
    pub fn or(self, defaults: Limits) -> Limits {
        Limits {
            stored_bytes: self.stored_bytes.or(defaults.stored_bytes),
            egress_bytes_per_month: self
                .egress_bytes_per_month
                .or(defaults.egress_bytes_per_month),
            requests_per_second: self.requests_per_second.or(defaults.requests_per_second),
            upload_bytes_per_second: self
                .upload_bytes_per_second
                .or(defaults.upload_bytes_per_second),
            download_bytes_per_second: self
                .download_bytes_per_second
                .or(defaults.download_bytes_per_second),
        }
    }
}

impl Store {
    /// The limits set for `account_id` (all unset when none were).
    pub async fn account_limits(&self, account_id: &str) -> Result<Limits, StoreError> {
        let row = sqlx::query(
            "SELECT stored_bytes, egress_bytes_per_month, requests_per_second, \
             upload_bytes_per_second, download_bytes_per_second FROM account_limits \
             WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(self.read_pool().await)
        .await?;
        let Some(r) = row else {
            return Ok(Limits::default());
        };
        Ok(Limits {
            stored_bytes: r.try_get("stored_bytes")?,
            egress_bytes_per_month: r.try_get("egress_bytes_per_month")?,
            requests_per_second: r.try_get("requests_per_second")?,
            upload_bytes_per_second: r.try_get("upload_bytes_per_second")?,
            download_bytes_per_second: r.try_get("download_bytes_per_second")?,
        })
    }

    /// Sets the account's limits to `l` (replacing what was set); false if
    /// there is no such account.
    pub async fn set_account_limits(
        &self,
        account_id: &str,
        l: &Limits,
    ) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let mut tx = self.write_tx().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO account_limits (account_id, stored_bytes, egress_bytes_per_month, \
             requests_per_second, upload_bytes_per_second, download_bytes_per_second, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id) DO UPDATE SET \
             stored_bytes = excluded.stored_bytes, \
             egress_bytes_per_month = excluded.egress_bytes_per_month, \
             requests_per_second = excluded.requests_per_second, \
             upload_bytes_per_second = excluded.upload_bytes_per_second, \
             download_bytes_per_second = excluded.download_bytes_per_second, \
             updated_at = excluded.updated_at",
        )
        .bind(account_id)
        .bind(l.stored_bytes)
        .bind(l.egress_bytes_per_month)
        .bind(l.requests_per_second)
        .bind(l.upload_bytes_per_second)
        .bind(l.download_bytes_per_second)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Bytes the account stores now, as ferry recorded them.
    pub async fn stored_bytes(&self, account_id: &str) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(o.size) AS BIGINT) FROM objects o \
             JOIN connections c ON c.id = o.connection_id WHERE c.account_id = $1",
        )
        .bind(account_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unwrap_or(0))
    }

    /// Bytes the account downloaded since `since` (unix ms, an hour's
    /// start).
    pub async fn egress_since(&self, account_id: &str, since: i64) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(bytes_out) AS BIGINT) FROM usage_hourly \
             WHERE account_id = $1 AND hour >= $2",
        )
        .bind(account_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_whole_numbers_however_json_writes_them() {
        let l: Limits = serde_json::from_str(
            r#"{"stored_bytes": 5, "upload_bytes_per_second": 152854742.0, "requests_per_second": null}"#,
        )
        .unwrap();
        assert_eq!(
            (
                l.stored_bytes,
                l.upload_bytes_per_second,
                l.requests_per_second
            ),
            (Some(5), Some(152_854_742), None)
        );
        for bad in [
            r#"{"stored_bytes": 1.5}"#,
            r#"{"stored_bytes": "5"}"#,
            r#"{"stored_bytes": 1e300}"#,
            r#"{"colour": 1}"#,
        ] {
            assert!(serde_json::from_str::<Limits>(bad).is_err(), "{bad}");
        }
    }
}
