//! Routes for spokes only (`/internal/v1/…`), answered only for requests
//! that arrived through an authenticated spoke tunnel; from anywhere else
//! they do not exist (404 `route_not_found`).
//!
//! - `grant`: the client's API key (forwarded as `Authorization`) and a
//!   connection name or id → what the spoke needs to stream with the
//!   provider itself: account, connection, provider and its configuration
//!   (credentials included: they stay in the spoke's memory), for a short
//!   lifetime.
//! - `lookup`: the metadata ferry recorded for an object.
//! - `commit`: object metadata, event and transfer of a finished upload.
//! - `transfer`: a transfer-log entry (downloads, rejected uploads).

use ferry_common::body::Body;
use ferry_common::contract::{
    Commit, Grant, GrantRequest, InternalCall, LookupAnswer, LookupRequest, Transfer,
};
use ferry_common::problem::{ErrorCode, Problem};
use http::{Request, StatusCode};

use super::connections::resolve;
use super::http_util::{json, no_content, read_json};
use super::operators::open_config;
use super::{ApiResult, AppState, store_problem};
use crate::tunnel::{SpokeOwn, ViaSpoke};

/// Providers whose data lives in the hub's own process: spokes cannot
/// reach it and forward those requests instead.
fn hub_local(provider: &str) -> bool {
    ferry_common::provider::ProviderKind::from_name(provider).is_none_or(|k| !k.direct())
}

pub async fn handle(state: &AppState, call: InternalCall, req: Request<Body>) -> ApiResult {
    let own = req.extensions().get::<SpokeOwn>().is_some();
    let Some(spoke) = req.extensions().get::<ViaSpoke>().cloned().filter(|_| own) else {
        return Err(Problem::new(
            ErrorCode::RouteNotFound,
            "no route matches this path",
        ));
    };
    let limit = state.max_json_body_bytes().max(1024 * 1024);
    match call {
        InternalCall::Grant => {
            let headers = req.headers().clone();
            let body: GrantRequest = read_json(req, limit).await?;
            let res = resolve(state, &headers, &body.connection).await?;
            let config = open_config(state, &res.row)?;
            let ttl_ms = state
                .spokes
                .as_ref()
                .map_or(30_000, |s| s.grant_ttl_secs * 1000);
            state.metrics.grant();
            tracing::debug!(spoke.id = %spoke.0, connection.id = %res.row.id, "granted a connection");
            let direct = !hub_local(&res.row.provider);
            let grant = Grant {
                account_id: res.account,
                connection_id: res.row.id,
                provider: res.row.provider,
                config,
                direct,
                ttl_ms,
            };
            Ok(json(StatusCode::OK, &grant))
        }
        InternalCall::Lookup => {
            let body: LookupRequest = read_json(req, limit).await?;
            let meta = state
                .store
                .get_object(&body.connection_id, &body.path)
                .await
                .map_err(|e| store_problem(state, e))?;
            Ok(json(StatusCode::OK, &LookupAnswer { meta }))
        }
        InternalCall::Commit => {
            let commit: Commit = read_json(req, limit).await?;
            // A connection deleted since the transfer began: nothing to
            // record, and a retry cannot help (4xx, so the spoke drops it).
            if let Some(m) = &commit.upsert
                && !state
                    .store
                    .connection_exists(&m.connection_id)
                    .await
                    .map_err(|e| store_problem(state, e))?
            {
                return Err(Problem::new(
                    ErrorCode::ConnectionNotFound,
                    "the connection was deleted",
                ));
            }
            state
                .store
                .commit(&commit)
                .await
                .map_err(|e| store_problem(state, e))?;
            Ok(no_content())
        }
        InternalCall::Transfer => {
            let transfer: Transfer = read_json(req, limit).await?;
            state
                .store
                .record_transfer(&transfer)
                .await
                .map_err(|e| store_problem(state, e))?;
            Ok(no_content())
        }
    }
}
