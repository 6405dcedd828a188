//! Quotas and limits per account: what the operator set for it
//! (`store::limits`) over the configuration's defaults (`[limits]`),
//! and the checks made before work is done.
//!
//! - **Stored bytes**: an upload is refused (`507 storage_quota_exceeded`)
//!   before any byte reaches the provider when the account already stores
//!   its quota, or the upload's announced length would take it past.
//! - **Egress per month**: a download is refused (`429
//!   egress_quota_exceeded`, `Retry-After` the next month's start) once
//!   the account's downloads this calendar month (UTC) reach the quota.
//! - **Requests per second**, at each hub: beyond, `429 rate_limited` with
//!   `Retry-After`.
//! - **Bandwidth**, bytes per second each way at each node: every transfer
//!   of the account there draws from one shared bucket
//!   (`ferry_common::content::throttle`); spokes get the rates with their
//!   grants.
//!
//! Limits are read from the store at most every [`FRESH_FOR`] per account
//! at each hub; a change reaches the other hubs within that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::content::throttle::{Bucket, Throttle, Throttles, TransferLimits};
use ferry_common::problem::{ErrorCode, Problem};

use crate::api::AppState;
use crate::store::limits::Limits;

/// How long limits read from the store are used.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// A request bucket holds this many seconds of requests.
const REQUEST_BURST_SECS: f64 = 1.0;

/// The limits of accounts at this hub.
#[derive(Debug, Default)]
pub struct AccountLimits {
    defaults: Limits,
    cache: Mutex<HashMap<String, (Instant, Limits)>>,
    /// The bandwidth buckets of transfers through this hub.
    pub throttles: Throttles,
    requests: Mutex<HashMap<String, Arc<Bucket>>>,
}

/// A limit that is set and not 0.
fn set(v: Option<i64>) -> Option<u64> {
    v.filter(|&n| n > 0).map(|n| n as u64)
}

/// The bandwidth part of `l`.
pub fn transfer_limits(l: &Limits) -> TransferLimits {
    TransferLimits {
        upload_bytes_per_second: set(l.upload_bytes_per_second),
        download_bytes_per_second: set(l.download_bytes_per_second),
    }
}

impl AccountLimits {
    /// With the configuration's defaults.
    pub fn new(defaults: Limits) -> Self {
        Self {
            defaults,
            ..Self::default()
        }
    }

    /// The defaults.
    pub fn defaults(&self) -> Limits {
        self.defaults
    }

    /// Forgets what was read for `account` (its limits changed here).
    pub fn forget(&self, account: &str) {
        self.cache.lock().expect("limits poisoned").remove(account);
    }
}

/// The limits that apply to `account` now.
pub async fn effective(state: &AppState, account: &str) -> Limits {
    let now = Instant::now();
    let known = state
        .limits
        .cache
        .lock()
        .expect("limits poisoned")
        .get(account)
        .copied();
    if let Some((at, l)) = known
        && now.duration_since(at) < FRESH_FOR
    {
        return l;
    }
    let set = match state.store.account_limits(account).await {
        Ok(set) => set,
        // A store that does not answer refuses no request for the limits:
        // those last read go on, or the defaults.
        Err(e) => {
            tracing::debug!(error = %e, "cannot read an account's limits; using the last known");
            return known.map_or(state.limits.defaults, |(_, l)| l);
        }
    };
    let l = set.or(state.limits.defaults);
    let mut cache = state.limits.cache.lock().expect("limits poisoned");
    if cache.len() > 100_000 {
        cache.clear();
    }
    cache.insert(account.to_owned(), (now, l));
    l
}

/// Refuses a request of `account` beyond its requests per second here.
pub async fn check_request_rate(state: &AppState, account: &str) -> Result<(), Problem> {
    let Some(rate) = set(effective(state, account).await.requests_per_second) else {
        return Ok(());
    };
    let bucket = {
        let mut map = state.limits.requests.lock().expect("limits poisoned");
        if map.len() > 100_000 {
            map.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let b = map
            .entry(account.to_owned())
            .or_insert_with(|| Arc::new(Bucket::with_burst(rate, REQUEST_BURST_SECS)))
            .clone();
        b.set_rate(rate);
        b
    };
    bucket.try_take_at(1, Instant::now()).map_err(|wait| {
        state.metrics.limit_refused("requests");
        Problem::new(
            ErrorCode::RateLimited,
            format!("this account may make {rate} requests per second here; slow down"),
        )
        .with_retry_after(wait.as_secs() + 1)
    })
}

/// What a request is about to do with content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Read it (a download).
    Read,
    /// Write this many bytes (unknown: `None`).
    Write(Option<u64>),
}

/// Checks `account`'s quotas for `what` and returns the buckets its
/// transfer draws from at this hub.
pub async fn admit(state: &AppState, account: &str, what: Use) -> Result<Throttle, Problem> {
    let l = check(state, account, what).await?;
    Ok(state
        .limits
        .throttles
        .for_account(account, transfer_limits(&l)))
}

/// Checks `account`'s quotas for `what`; returns its limits (for a spoke's
/// grant).
pub async fn check(state: &AppState, account: &str, what: Use) -> Result<Limits, Problem> {
    let l = effective(state, account).await;
    let failed = |e| crate::api::store_problem(state, e);
    match what {
        Use::Write(len) => {
            if let Some(quota) = set(l.stored_bytes) {
                let stored = state
                    .store
                    .stored_bytes(account)
                    .await
                    .map_err(failed)?
                    .max(0) as u64;
                let after = stored.saturating_add(len.unwrap_or(0));
                if stored >= quota || after > quota {
                    state.metrics.limit_refused("stored_bytes");
                    return Err(Problem::new(
                        ErrorCode::StorageQuotaExceeded,
                        format!(
                            "this account stores {stored} bytes of its {quota}; {}nothing was written",
                            if len.is_some() {
                                "this upload would take it past them; "
                            } else {
                                ""
                            }
                        ),
                    ));
                }
            }
        }
        Use::Read => {
            if let Some(quota) = set(l.egress_bytes_per_month) {
                let (start, next) = month_bounds(crate::store::now_ms());
                let used = state
                    .store
                    .egress_since(account, start)
                    .await
                    .map_err(failed)?
                    .max(0) as u64;
                if used >= quota {
                    let wait = ((next - crate::store::now_ms()).max(1000) / 1000) as u64;
                    state.metrics.limit_refused("egress");
                    return Err(Problem::new(
                        ErrorCode::EgressQuotaExceeded,
                        format!(
                            "this account downloaded {used} bytes this month, its quota is {quota}; downloads resume next month"
                        ),
                    )
                    .with_retry_after(wait));
                }
            }
        }
    }
    Ok(l)
}

/// The start of the calendar month (UTC) holding `at` and of the next
/// one, unix ms.
pub fn month_bounds(at: i64) -> (i64, i64) {
    let t = jiff::Timestamp::from_millisecond(at).unwrap_or_default();
    let day = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    let first = day.first_of_month();
    let next = first
        .checked_add(jiff::Span::new().months(1))
        .unwrap_or(first);
    let ms = |d: jiff::civil::Date| {
        d.to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .unwrap_or(0)
    };
    (ms(first), ms(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_begin_on_the_first_at_midnight_utc() {
        let at: jiff::Timestamp = "2026-12-07T05:30:00Z".parse().unwrap();
        let (start, next) = month_bounds(at.as_millisecond());
        assert_eq!(
            jiff::Timestamp::from_millisecond(start)
                .unwrap()
                .to_string(),
            "2026-12-01T00:00:00Z"
        );
        assert_eq!(
            jiff::Timestamp::from_millisecond(next).unwrap().to_string(),
            "2027-01-01T00:00:00Z"
        );
    }

    #[test]
    fn an_account_s_limits_take_the_defaults_where_unset_and_0_lifts_them() {
        let defaults = Limits {
            stored_bytes: Some(1000),
            download_bytes_per_second: Some(50),
            ..Limits::default()
        };
        let mine = Limits {
            stored_bytes: Some(0),
            upload_bytes_per_second: Some(7),
            ..Limits::default()
        }
        .or(defaults);
        assert_eq!(set(mine.stored_bytes), None);
        assert_eq!(
            transfer_limits(&mine),
            TransferLimits {
                upload_bytes_per_second: Some(7),
                download_bytes_per_second: Some(50),
            }
        );
    }
}
