//! `GET /v1/usage`: what an account (or, with the admin token, every
//! account) used, from the hourly figures (`store::usage`), as JSON or CSV
//! for billing; and the counter of the requests the hub answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::body::{Body, full};
use ferry_common::problem::{ErrorCode, Problem};
use http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::auth::{is_operator, require_account};
use super::http_util::json;
use super::routes::query_pairs;
use super::{ApiResult, AppState, store_problem};
use crate::store::usage::{Figures, HOUR_MS, RequestCounts, UsageRow, grouped, hour_of};

/// Requests answered, per (account, hour, node), not yet in the store.
#[derive(Debug, Default)]
pub struct RequestCounter(Mutex<RequestCounts>);

impl RequestCounter {
    /// Counts a request of `account` with `method` that came through
    /// `node` (`GET` and `HEAD` read; the others write).
    pub fn count_request(&self, account: String, node: String, method: &http::Method) {
        let write = !matches!(*method, http::Method::GET | http::Method::HEAD);
        self.count(account, node, write);
    }

    /// Counts a request of `account` that came through `node`.
    fn count(&self, account: String, node: String, write: bool) {
        let hour = hour_of(crate::store::now_ms());
        let mut counts = self.0.lock().expect("usage counter poisoned");
        let c = counts.entry((account, hour, node)).or_default();
        if write {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
    }

    fn take(&self) -> RequestCounts {
        std::mem::take(&mut *self.0.lock().expect("usage counter poisoned"))
    }

    /// Puts back counts that could not be written.
    fn restore(&self, counts: RequestCounts) {
        let mut now = self.0.lock().expect("usage counter poisoned");
        for (k, (r, w)) in counts {
            let c = now.entry(k).or_default();
            c.0 += r;
            c.1 += w;
        }
    }
}

/// How often counted requests are added to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Adds the counted requests to the store every [`FLUSH_EVERY`] until
/// `stop`, and once more then.
pub async fn flush(state: Arc<AppState>, stop: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(FLUSH_EVERY) => false,
        };
        let counts = state.usage.take();
        if let Err(e) = state.store.add_requests(&counts).await {
            tracing::warn!(error = %e, "cannot add request counts to the usage; kept for the next try");
            state.usage.restore(counts);
        }
        if stopping {
            break;
        }
    }
}

/// The grouping asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct GroupBy {
    period: Option<Period>,
    node: bool,
    connection: bool,
    account: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Hour,
    Day,
    Month,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The period's label of the hour starting at `hour` (unix ms), UTC.
    fn label(self, hour: i64) -> String {
        let t = jiff::Timestamp::from_millisecond(hour).unwrap_or_default();
        let text = t.to_string();
        match self {
            Period::Hour => text,
            Period::Day => text[..10].to_owned(),
            Period::Month => text[..7].to_owned(),
        }
    }
}

fn bad_query(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::InvalidQuery, detail)
}

/// A time given as `2026-12-07` (that day's start, UTC) or an RFC 3339
/// timestamp, in unix ms.
fn parse_time(name: &str, text: &str) -> Result<i64, Problem> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    full.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            bad_query(format!(
                "'{name}' is a date (2026-12-01) or an RFC 3339 time (2026-12-01T10:00:00Z)"
            ))
        })
}

/// The longest range one answer covers.
const MAX_RANGE_MS: i64 = 400 * 24 * HOUR_MS;

pub async fn report(state: &AppState, req: Request<Body>) -> ApiResult {
    // An account's key sees that account; the operator's token (no
    // account's key) every account, checked as the admin API checks it,
    // wrong tokens counted.
    let scope = if is_operator(state, &req) {
        None
    } else {
        Some(require_account(state, req.headers()).await?)
    };
    let pairs = query_pairs(req.uri().query())
        .map_err(|_| bad_query("the query is not valid percent-encoded UTF-8"))?;
    let now = crate::store::now_ms();
    let (mut from, mut to, mut group, mut csv, mut only) =
        (None, None, GroupBy::default(), None, None);
    for (k, v) in pairs {
        match k.as_str() {
            "from" => from = Some(parse_time("from", &v)?),
            "to" => to = Some(parse_time("to", &v)?),
            "format" => {
                csv = match v.as_str() {
                    "csv" => Some(true),
                    "json" => Some(false),
                    _ => return Err(bad_query("'format' is json or csv")),
                }
            }
            "account" if scope.is_none() => only = Some(v),
            "group_by" => {
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    let period = match part {
                        "hour" => Some(Period::Hour),
                        "day" => Some(Period::Day),
                        "month" => Some(Period::Month),
                        "node" => {
                            group.node = true;
                            None
                        }
                        "connection" => {
                            group.connection = true;
                            None
                        }
                        "account" if scope.is_none() => {
                            group.account = true;
                            None
                        }
                        _ => {
                            return Err(bad_query(format!(
                                "'group_by' takes hour, day or month, node, connection{}; not {part:?}",
                                if scope.is_none() { ", account" } else { "" }
                            )));
                        }
                    };
                    if let Some(p) = period {
                        if group.period.is_some_and(|q| q != p) {
                            return Err(bad_query("'group_by' takes one of hour, day and month"));
                        }
                        group.period = Some(p);
                    }
                }
            }
            other => return Err(bad_query(format!("unknown query parameter '{other}'"))),
        }
    }
    // Without `format`, an `Accept` naming CSV asks for it.
    let csv = csv.unwrap_or_else(|| {
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"))
    });
    // The month so far unless told: hours that began in [from, to).
    let from = hour_of(from.unwrap_or_else(|| crate::limits::month_bounds(now).0));
    let to = to.unwrap_or(now + 1);
    let to = hour_of(to - 1) + HOUR_MS;
    if to <= from || to - from > MAX_RANGE_MS {
        return Err(bad_query(
            "'to' must come after 'from', at most 400 days later",
        ));
    }
    let account = scope.as_deref().or(only.as_deref());
    let rows = state
        .store
        .usage_rows(account, from, to)
        .await
        .map_err(|e| store_problem(state, e))?;
    let stored = state
        .store
        .stored(account)
        .await
        .map_err(|e| store_problem(state, e))?;
    let key = |r: &UsageRow| {
        (
            group.account.then(|| r.account_id.clone()),
            group.period.map(|p| p.label(r.hour)),
            group.node.then(|| r.node.clone()),
            group.connection.then(|| r.connection_id.clone()),
        )
    };
    let buckets = grouped(&rows, key);
    let mut columns: Vec<&str> = Vec::new();
    if group.account {
        columns.push("account_id");
    }
    if let Some(p) = group.period {
        columns.push(p.name());
    }
    if group.node {
        columns.push("node");
    }
    if group.connection {
        columns.push("connection_id");
    }
    let label = |t: i64| {
        jiff::Timestamp::from_millisecond(t)
            .unwrap_or_default()
            .to_string()
    };
    if csv {
        return Ok(csv_answer(&columns, &buckets));
    }
    let usage: Vec<Value> = buckets
        .iter()
        .map(|((a, p, n, c), f)| {
            let mut v = serde_json::to_value(f).expect("figures serialise");
            let keys = [a, p, n, c].into_iter().flatten();
            for (name, value) in columns.iter().zip(keys) {
                v[*name] = json!(value);
            }
            v
        })
        .collect();
    let total = grouped(&rows, |_| ())
        .pop()
        .map(|(_, f)| f)
        .unwrap_or_default();
    let stored: Vec<Value> = stored
        .into_iter()
        .map(|(a, c, objects, bytes)| {
            let mut v = json!({ "connection_id": c, "objects": objects, "bytes": bytes });
            if scope.is_none() {
                v["account_id"] = json!(a);
            }
            v
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "from": label(from),
            "to": label(to),
            "group_by": columns,
            "usage": usage,
            "total": total,
            "stored": stored,
        }),
    ))
}

type Key = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The buckets as CSV: the grouping columns, then the figures.
fn csv_answer(columns: &[&str], buckets: &[(Key, Figures)]) -> Response<Body> {
    let figures = [
        "bytes_in",
        "bytes_out",
        "uploads",
        "downloads",
        "requests_read",
        "requests_write",
    ];
    let mut out = String::new();
    let head: Vec<&str> = columns.iter().copied().chain(figures).collect();
    out.push_str(&head.join(","));
    out.push_str("\r\n");
    for ((a, p, n, c), f) in buckets {
        let mut cells: Vec<String> = [a, p, n, c]
            .into_iter()
            .flatten()
            .map(|v| csv_cell(v))
            .collect();
        cells.extend(
            [
                f.bytes_in,
                f.bytes_out,
                f.uploads,
                f.downloads,
                f.requests_read,
                f.requests_write,
            ]
            .map(|n| n.to_string()),
        );
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    let mut resp = Response::new(full(out));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    resp
}

/// One CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line
/// break; a cell a spreadsheet would read as a formula is prefixed with `'`.
fn csv_cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_labelled_in_utc_and_csv_cells_are_safe() {
        let hour = parse_time("from", "2026-12-07T05:00:00Z").unwrap();
        assert_eq!(Period::Hour.label(hour), "2026-12-07T05:00:00Z");
        assert_eq!(Period::Day.label(hour), "2026-12-07");
        assert_eq!(Period::Month.label(hour), "2026-12");
        assert_eq!(
            parse_time("from", "2026-12-07").unwrap(),
            hour - 5 * HOUR_MS
        );
        assert!(parse_time("from", "07/12/2026").is_err());
        assert_eq!(csv_cell("fra1"), "fra1");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()"), "'=cmd()");
    }

    #[test]
    fn requests_are_counted_per_account_hour_and_node_and_kept_when_not_written() {
        let c = RequestCounter::default();
        c.count("acc_1".into(), "hub".into(), false);
        c.count("acc_1".into(), "hub".into(), true);
        c.count("acc_1".into(), "fra1".into(), false);
        let taken = c.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken.values().copied().map(|(r, w)| r + w).sum::<i64>(), 3);
        c.count("acc_1".into(), "hub".into(), false);
        c.restore(taken);
        let again = c.take();
        let hub = again.iter().find(|(k, _)| k.2 == "hub").unwrap().1;
        assert_eq!(*hub, (2, 1));
    }
}
