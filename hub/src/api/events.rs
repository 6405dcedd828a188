//! `GET /v1/events`: the account's activity feed, resumable by cursor.
//!
//! A cursor is `s` followed by the number of the last event the reader
//! has (`s0` before the first): numbers count the account's own events,
//! so a cursor says nothing about other accounts. A cursor of the earlier
//! kind, a bare global event id, is still taken and answered with a cursor
//! of the new kind that stands at the same place.

use ferry_common::body::Body;
use ferry_common::problem::{ErrorCode, Problem};
use http::{Request, StatusCode};
use serde_json::json;

use super::auth::require_account;
use super::http_util::{json, paging_with};
use super::{ApiResult, AppState, store_problem};

/// The most digits a cursor's number may have: any number of 18 digits
/// fits an `i64`.
const MAX_DIGITS: usize = 18;

/// Where a reader of the feed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// After the account's event of this number (`s42`).
    After(i64),
    /// After the event of this global id: a cursor handed out before
    /// events were numbered per account (`42`).
    AfterGlobalId(i64),
}

impl Cursor {
    /// Reads `s` followed by 1 to 18 digits, or 1 to 18 digits alone.
    fn parse(text: &str) -> Option<Cursor> {
        let (digits, legacy) = match text.strip_prefix('s') {
            Some(rest) => (rest, false),
            None => (text, true),
        };
        let well_formed =
            (1..=MAX_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        let n = digits.parse().ok().filter(|_| well_formed)?;
        Some(if legacy {
            Cursor::AfterGlobalId(n)
        } else {
            Cursor::After(n)
        })
    }
}

/// A cursor standing after the account's event numbered `seq`.
fn cursor_after(seq: i64) -> String {
    format!("s{seq}")
}

pub async fn list(state: &AppState, req: Request<Body>) -> ApiResult {
    let account = require_account(state, req.headers()).await?;
    let (page, filters) = paging_with(&req, 100, 1000, &["connection", "path"])?;
    let given = |name: &str| {
        filters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // A connection by id or name, as everywhere: another account's is
    // not found.
    let connection = match given("connection") {
        Some(c) => Some(super::connections::find(state, &account, &c).await?.id),
        None => None,
    };
    let path = given("path");
    let cursor = match &page.cursor {
        None => Cursor::After(0),
        Some(c) => Cursor::parse(c).ok_or_else(|| {
            Problem::new(
                ErrorCode::InvalidCursor,
                "use a 'next_cursor' from an earlier answer",
            )
        })?,
    };
    let after = match cursor {
        Cursor::After(seq) => seq,
        Cursor::AfterGlobalId(id) => state
            .store
            .event_seq_at_legacy_id(&account, id)
            .await
            .map_err(|e| store_problem(state, e))?,
    };
    // Events removed for their age: a reader without a cursor starts at
    // the oldest kept; one whose cursor stands before them has missed
    // events and is told so — decided by the horizon read after the page,
    // so that a removal between the two cannot skip events unannounced.
    let horizon = async || {
        state
            .store
            .event_horizon(&account)
            .await
            .map_err(|e| store_problem(state, e))
    };
    let after = match page.cursor {
        Some(_) => after,
        None => after.max(horizon().await?),
    };
    let events = state
        .store
        .list_events_matching(
            &account,
            after,
            page.limit as i64,
            connection.as_deref(),
            path.as_deref(),
        )
        .await
        .map_err(|e| store_problem(state, e))?;
    let kept_from = horizon().await?;
    if after < kept_from {
        return Err(Problem::new(
            ErrorCode::CursorExpired,
            format!(
                "events after this cursor were removed for their age; the oldest kept come after '{}'. Start again from there (or without a cursor) and resynchronise what you keep",
                cursor_after(kept_from)
            ),
        ));
    }
    let next = events.last().map_or(after, |e| e.id);
    Ok(json(
        StatusCode::OK,
        &json!({
            "events": events,
            "next_cursor": cursor_after(next),
            "has_more": events.len() == page.limit,
        }),
    ))
}

/// Events removed in one transaction at most.
const PURGE_BATCH: i64 = 5_000;

/// Removes events older than `retention` (nothing without one), every
/// tenth of it (at least a second apart, at most an hour), until `stop`.
pub async fn retain(
    state: std::sync::Arc<AppState>,
    retention: Option<std::time::Duration>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(keep) = retention else { return };
    let every = (keep / 10).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    loop {
        if state.store.writable() {
            let before = ferry_common::content::model::now_ms() - keep.as_millis() as i64;
            let mut removed = 0;
            loop {
                match state.store.purge_events(before, PURGE_BATCH).await {
                    Ok(n) => {
                        removed += n;
                        if (n as i64) < PURGE_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not remove old events");
                        break;
                    }
                }
            }
            if removed > 0 {
                tracing::info!(events = removed, "removed events past their retention");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_numbers_of_at_most_18_digits_with_or_without_s() {
        assert_eq!(Cursor::parse("s0"), Some(Cursor::After(0)));
        assert_eq!(Cursor::parse("s42"), Some(Cursor::After(42)));
        assert_eq!(Cursor::parse("42"), Some(Cursor::AfterGlobalId(42)));
        assert_eq!(
            Cursor::parse("s999999999999999999"),
            Some(Cursor::After(999_999_999_999_999_999))
        );
        for bad in [
            "",
            "s",
            "s-1",
            "-1",
            "+1",
            "s+1",
            "abc",
            "S1",
            "s1x",
            " 1",
            "1000000000000000000",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
        assert_eq!(cursor_after(7), "s7");
    }
}
