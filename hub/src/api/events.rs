//! `GET /v1/events`: the account's activity feed, resumable by cursor.

use ferry_common::body::Body;
use ferry_common::problem::{ErrorCode, Problem};
use http::{Request, StatusCode};
use serde_json::json;

use super::auth::require_account;
use super::http_util::{json, paging};
use super::{ApiResult, AppState, store_problem};

pub async fn list(state: &AppState, req: Request<Body>) -> ApiResult {
    let account = require_account(state, req.headers()).await?;
    let page = paging(&req, 100, 1000)?;
    let after = match &page.cursor {
        None => 0,
        Some(c) => c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            Problem::new(
                ErrorCode::InvalidCursor,
                "use a 'next_cursor' from an earlier answer",
            )
        })?,
    };
    let events = state
        .store
        .list_events(&account, after, page.limit as i64)
        .await
        .map_err(|e| store_problem(state, e))?;
    let next = events.last().map_or(after, |e| e.id);
    Ok(json(
        StatusCode::OK,
        &json!({
            "events": events,
            "next_cursor": next.to_string(),
            "has_more": events.len() == page.limit,
        }),
    ))
}
