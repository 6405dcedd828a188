//! Routes for spokes only (`/internal/v1/…`), answered only for requests
//! that arrived through an authenticated spoke tunnel and are the spoke's
//! own; from anywhere else they do not exist (404 `route_not_found`).
//!
//! - `grant`: the client's API key (forwarded as `Authorization`), a
//!   connection name or id, a path and an operation → what the spoke needs
//!   to stream that one object with the provider itself (account,
//!   connection, provider and its configuration, credentials included:
//!   they stay in the spoke's memory), what ferry recorded for it, and a
//!   signed grant bound to the spoke, account, connection, path and
//!   operation (`crate::grant`).
//! - `lookup`, `commit`, `transfer`: held to the grant that comes with
//!   them (`x-ferry-grant`); anything it does not cover is refused with
//!   403 `grant_refused`, so an enrolled spoke can touch no tenant's
//!   metadata but what a client asked of it.

use ferry_common::body::Body;
use ferry_common::contract::{
    Commit, GRANT_HEADER, Grant, GrantRequest, InternalCall, LookupAnswer, LookupRequest, Transfer,
};
use ferry_common::problem::{ErrorCode, Problem};
use http::{Request, StatusCode};

use super::connections::resolve;
use super::http_util::{json, no_content, read_json};
use super::operators::open_config;
use super::{ApiResult, AppState, store_problem};
use crate::grant::{Claims, GrantError};
use crate::store::now_ms;
use crate::tunnel::{SpokeOwn, ViaSpoke};

/// Whether a spoke can reach `provider` itself; not for providers whose
/// data lives in the hub's own process (a spoke forwards those requests).
pub(super) fn direct(provider: &str) -> bool {
    ferry_common::provider::ProviderKind::from_name(provider).is_some_and(|k| k.direct())
}

/// The spoke a request is the own call of, if it is one.
fn own_spoke(req: &Request<Body>) -> Option<&str> {
    req.extensions().get::<SpokeOwn>()?;
    req.extensions().get::<ViaSpoke>().map(|v| v.0.as_str())
}

/// The grant a spoke's own call carries, verified for that spoke; `None`
/// for requests that are no spoke's own call or carry no grant.
pub fn grant_of(state: &AppState, req: &Request<Body>) -> Option<Result<Claims, GrantError>> {
    let spoke = own_spoke(req)?;
    let token = req.headers().get(GRANT_HEADER)?;
    Some(
        token
            .to_str()
            .map_err(|_| GrantError::Invalid)
            .and_then(|t| state.grants.verify(t, spoke, now_ms())),
    )
}

pub(super) fn refused(
    state: &AppState,
    spoke: &str,
    call: InternalCall,
    e: &GrantError,
) -> Problem {
    state.metrics.grant_refused();
    tracing::warn!(spoke.id = %spoke, call = call.name(), reason = %e, "refused a spoke's call outside its grant");
    Problem::new(ErrorCode::GrantRefused, e.to_string())
}

pub async fn handle(state: &AppState, call: InternalCall, req: Request<Body>) -> ApiResult {
    let Some(spoke) = own_spoke(&req).map(str::to_owned) else {
        return Err(Problem::new(
            ErrorCode::RouteNotFound,
            "no route matches this path",
        ));
    };
    let limit = state.max_json_body_bytes().max(1024 * 1024);
    if call == InternalCall::Grant {
        return grant(state, &spoke, req, limit).await;
    }
    if matches!(
        call,
        InternalCall::UploadCreate
            | InternalCall::UploadBegin
            | InternalCall::UploadRenew
            | InternalCall::UploadRelease
            | InternalCall::UploadAppend
    ) {
        return super::uploads::internal(state, &spoke, call, req, limit).await;
    }
    let claims = grant_of(state, &req)
        .unwrap_or(Err(GrantError::Missing))
        .map_err(|e| refused(state, &spoke, call, &e))?;
    let outside = |e: GrantError| refused(state, &spoke, call, &e);
    match call {
        InternalCall::Grant
        | InternalCall::UploadCreate
        | InternalCall::UploadBegin
        | InternalCall::UploadRenew
        | InternalCall::UploadRelease
        | InternalCall::UploadAppend => unreachable!("answered above"),
        InternalCall::Lookup => {
            let body: LookupRequest = read_json(req, limit).await?;
            claims
                .check_lookup(&body.connection_id, &body.path)
                .map_err(outside)?;
            let meta = state
                .store
                .get_object(&body.connection_id, &body.path)
                .await
                .map_err(|e| store_problem(state, e))?;
            Ok(json(StatusCode::OK, &LookupAnswer { meta }))
        }
        InternalCall::Commit => {
            let commit: Commit = read_json(req, limit).await?;
            let recorded = state
                .store
                .get_object(&claims.connection, &claims.path)
                .await
                .map_err(|e| store_problem(state, e))?;
            claims
                .check_commit(&commit, &spoke, recorded.as_ref())
                .map_err(outside)?;
            // A connection deleted since the transfer began: nothing to
            // record, and a retry cannot help (4xx, so the spoke drops it).
            if !state
                .store
                .connection_exists(&claims.connection)
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
            claims.check_transfer(&transfer, &spoke).map_err(outside)?;
            state
                .store
                .record_transfer(&transfer)
                .await
                .map_err(|e| store_problem(state, e))?;
            Ok(no_content())
        }
    }
}

/// A grant for the client whose key comes with the call, for one object.
async fn grant(state: &AppState, spoke: &str, req: Request<Body>, limit: usize) -> ApiResult {
    let headers = req.headers().clone();
    let body: GrantRequest = read_json(req, limit).await?;
    let path = ferry_common::path::ObjectPath::parse(&body.path)
        .map_err(|e| Problem::new(ErrorCode::InvalidPath, e.to_string()))?;
    let res = resolve(state, &headers, &body.connection).await?;
    let meta = state
        .store
        .get_object(&res.row.id, path.as_str())
        .await
        .map_err(|e| store_problem(state, e))?;
    tracing::debug!(spoke.id = %spoke, connection.id = %res.row.id, op = ?body.op, "granted an object");
    let grant = issue(
        state,
        Granting {
            spoke,
            headers: &headers,
            account: res.account,
            row: res.row,
            path: path.as_str().to_owned(),
            op: body.op,
            upload: None,
            meta,
        },
    )?;
    Ok(json(StatusCode::OK, &grant))
}

/// What a grant is issued for.
pub(super) struct Granting<'a> {
    /// The spoke it is issued to.
    pub spoke: &'a str,
    /// The client's request head (its `Authorization` is the principal).
    pub headers: &'a http::HeaderMap,
    /// The client's account.
    pub account: String,
    /// The connection.
    pub row: crate::store::ConnectionRow,
    /// The one path it covers.
    pub path: String,
    /// What it allows.
    pub op: ferry_common::contract::GrantOp,
    /// An upload grant's session and lease token.
    pub upload: Option<(String, Option<String>)>,
    /// What ferry recorded for the object, sent along.
    pub meta: Option<ferry_common::content::model::ObjectMeta>,
}

/// Signs the grant for `g`: what the spoke needs to reach the provider,
/// bound to the spoke, account, connection, path, operation and client,
/// for the tunnel's report window.
pub(super) fn issue(state: &AppState, g: Granting<'_>) -> Result<Grant, Problem> {
    let config = open_config(state, &g.row)?;
    let support = state.spokes.as_ref();
    let ttl_secs = support.map_or(30, |s| s.grant_ttl_secs);
    let window_secs = support.map_or(86_400, |s| s.report_window_secs);
    let principal = g
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| ferry_common::principal::of(v.as_bytes()))
        .unwrap_or_default();
    let (upload, lease) = g.upload.unzip();
    let claims = Claims {
        spoke: g.spoke.to_owned(),
        account: g.account.clone(),
        connection: g.row.id.clone(),
        path: g.path,
        op: g.op,
        principal,
        until_ms: now_ms().saturating_add(i64::try_from(window_secs * 1000).unwrap_or(i64::MAX)),
        upload,
        lease: lease.flatten(),
    };
    state.metrics.grant();
    Ok(Grant {
        token: state.grants.issue(&claims),
        direct: direct(&g.row.provider),
        account_id: g.account,
        connection_id: g.row.id,
        provider: g.row.provider,
        config,
        ttl_ms: ttl_secs * 1000,
        allow_private_endpoints: state.providers.endpoint_policy().allow_private,
        meta: g.meta,
    })
}
