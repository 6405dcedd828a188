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
//! - `s3_authorize`: the head of a client's S3 request → its signature
//!   checked, and either "forward it" or the key's secret and a pass for
//!   that one request (`super::s3door::authorize`). A pass stands for the
//!   client on `grant`, `upload_create` and `upload_begin` in place of an
//!   API key, held to its one connection and object (or partial uploads)
//!   and to reading or writing.
//! - `renew_certificate`: a new key, with the proof that the spoke holds
//!   it → a certificate for the name its tunnel proved (see
//!   `renew_certificate` below).
//! - `lookup`, `intend`, `abandon`, `commit`, `transfer`: held to the grant that
//!   comes with them (`x-ferry-grant`); anything it does not cover is
//!   refused with 403 `grant_refused`, so an enrolled spoke can touch no
//!   tenant's metadata but what a client asked of it. `intend` records a
//!   spoke's upload before it is put in place (409 `write_conflict` when
//!   another change to the object came first), and the upload's commit
//!   names the intent it settles; `abandon` gives up one whose provider
//!   write failed, settled at once by what the provider holds.

use ferry_common::body::Body;
use ferry_common::contract::{
    Commit, GRANT_HEADER, Grant, GrantRequest, Intent, IntentRef, InternalCall, LookupAnswer,
    LookupRequest, Transfer,
};
use ferry_common::problem::{ErrorCode, Problem};
use http::{Request, StatusCode};

use super::auth::require_account;
use super::connections::find;
use super::http_util::{json, no_content, read_json};
use super::operators::open_config;
use super::operators::operator_for;
use super::{ApiResult, AppState, store_problem};
use crate::grant::{Claims, GrantError, PassClaims};
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

pub async fn handle(
    state: &std::sync::Arc<AppState>,
    call: InternalCall,
    req: Request<Body>,
) -> ApiResult {
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
    if call == InternalCall::S3Authorize {
        return super::s3door::authorize(state, &spoke, req, limit).await;
    }
    if call == InternalCall::RenewCertificate {
        return renew_certificate(state, &spoke, req, limit).await;
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
    // A completion report's id (commits and transfers from a spoke's
    // journal), namespaced by the spoke that sent it.
    let report = req
        .headers()
        .get(ferry_common::contract::REPORT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| ferry_common::request_id::valid(id))
        .map(|id| format!("{spoke}/{id}"));
    match call {
        InternalCall::Grant
        | InternalCall::UploadCreate
        | InternalCall::UploadBegin
        | InternalCall::UploadRenew
        | InternalCall::UploadRelease
        | InternalCall::UploadAppend
        | InternalCall::S3Authorize
        | InternalCall::RenewCertificate => unreachable!("answered above"),
        InternalCall::SlowDown => {
            let body: ferry_common::contract::SlowDownReport = read_json(req, limit).await?;
            if body.connection_id != claims.connection {
                return Err(outside(GrantError::Outside("another connection")));
            }
            tracing::info!(spoke.id = %spoke, connection.id = %body.connection_id, "a spoke's provider asked to slow down");
            super::slow_down(state, &body.connection_id);
            Ok(no_content())
        }
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
        InternalCall::Intend => {
            let intent: Intent = read_json(req, limit).await?;
            let recorded = recorded(state, &claims).await?;
            claims
                .check_intent(&intent, &spoke, recorded.as_ref())
                .map_err(outside)?;
            still_there(state, &claims.connection).await?;
            let id = super::content_host::record_intent(state, &intent, Some(&spoke)).await?;
            Ok(json(StatusCode::OK, &IntentRef { intent: id }))
        }
        InternalCall::Abandon => {
            let body: IntentRef = read_json(req, limit).await?;
            let pending = state
                .store
                .pending_intent(&body.intent)
                .await
                .map_err(|e| store_problem(state, e))?;
            if let Some(p) = pending {
                claims.check_abandon(&p, &spoke).map_err(outside)?;
                tokio::spawn(super::intents::abandoned(state.clone(), p.id));
            }
            Ok(no_content())
        }
        InternalCall::Commit => {
            let commit: Commit = read_json(req, limit).await?;
            let recorded = recorded(state, &claims).await?;
            claims
                .check_commit(&commit, &spoke, recorded.as_ref())
                .map_err(outside)?;
            own_intent(state, &commit, &spoke, call).await?;
            still_there(state, &claims.connection).await?;
            // A report seen before (delivered, then sent again from the
            // spoke's journal) is answered as taken, not applied twice.
            let applied = state
                .store
                .commit_report(&commit, report.as_deref())
                .await
                .map_err(|e| store_problem(state, e))?;
            if !applied {
                tracing::info!(spoke.id = %spoke, report.id = report.as_deref().unwrap_or(""), "a report came again; it was applied before");
            }
            Ok(no_content())
        }
        InternalCall::Transfer => {
            let transfer: Transfer = read_json(req, limit).await?;
            claims.check_transfer(&transfer, &spoke).map_err(outside)?;
            still_there(state, &claims.connection).await?;
            // Answered once written, in a batch with other spokes' reports.
            state
                .transfer_log
                .record(&state.store, transfer, report)
                .await
                .map_err(|e| store_problem(state, e))?;
            Ok(no_content())
        }
    }
}

/// Refuses a spoke's commit that names an intent another node recorded
/// (settling it would let a second writer onto the path). An intent no
/// longer known (settled and forgotten) settles nothing either way.
pub(super) async fn own_intent(
    state: &AppState,
    commit: &Commit,
    spoke: &str,
    call: InternalCall,
) -> Result<(), Problem> {
    let Some(id) = &commit.intent else {
        return Ok(());
    };
    match state.store.intent_made_by(id).await {
        Ok(Some(by)) if by.as_deref() != Some(spoke) => Err(refused(
            state,
            spoke,
            call,
            &GrantError::Outside("another node's intent"),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(store_problem(state, e)),
    }
}

/// What the store holds for the object `claims` grant.
pub(super) async fn recorded(
    state: &AppState,
    claims: &Claims,
) -> Result<Option<ferry_common::content::model::ObjectMeta>, Problem> {
    state
        .store
        .get_object(&claims.connection, &claims.path)
        .await
        .map_err(|e| store_problem(state, e))
}

/// Fails with `404 connection_not_found` when connection `id` was deleted
/// since its grant was made (its account too, perhaps): nothing to record,
/// and a retry cannot help (a 4xx, so the spoke drops the report).
async fn still_there(state: &AppState, id: &str) -> Result<(), Problem> {
    match state.store.connection_exists(id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Problem::new(
            ErrorCode::ConnectionNotFound,
            "the connection was deleted",
        )),
        Err(e) => Err(store_problem(state, e)),
    }
}

/// Whom a spoke's call speaks for.
pub(super) struct Caller {
    /// The account.
    pub account: String,
    /// Its principal, for read-your-writes.
    pub principal: String,
    /// The S3 pass it came with, which limits what it may ask.
    pub pass: Option<PassClaims>,
}

/// The client a spoke's call comes with: an API key (`Bearer`), or the
/// pass of an S3 request the hub checked (`FerryS3`), issued to this
/// spoke, not run out, its key not revoked since.
pub(super) async fn caller(
    state: &AppState,
    spoke: &str,
    call: InternalCall,
    headers: &http::HeaderMap,
) -> Result<Caller, Problem> {
    let pass = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(ferry_common::contract::PASS_SCHEME))
        .and_then(|v| v.strip_prefix(' '));
    let Some(token) = pass else {
        let account = require_account(state, headers).await?;
        let principal = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| ferry_common::principal::of(v.as_bytes()))
            .unwrap_or_default();
        return Ok(Caller {
            account,
            principal,
            pass: None,
        });
    };
    let pass = state
        .grants
        .verify_pass(token.trim(), spoke, now_ms())
        .map_err(|e| refused(state, spoke, call, &e))?;
    let key = state
        .store
        .s3_key(&pass.access_key)
        .await
        .map_err(|e| store_problem(state, e))?;
    if key.is_none_or(|(k, _)| k.account_id != pass.account) {
        return Err(Problem::new(
            ErrorCode::Unauthorized,
            "the S3 key was revoked",
        ));
    }
    Ok(Caller {
        account: pass.account.clone(),
        principal: ferry_common::s3_door::key_principal(&pass.access_key),
        pass: Some(pass),
    })
}

/// A grant for the client whose key (or S3 pass) comes with the call, for
/// one object.
async fn grant(state: &AppState, spoke: &str, req: Request<Body>, limit: usize) -> ApiResult {
    // The epoch as known before anything is authorised: a grant made from
    // reads older than an invalidation must not carry its epoch.
    let epoch = state.store.observed_epoch();
    let headers = req.headers().clone();
    let caller = caller(state, spoke, InternalCall::Grant, &headers).await?;
    let body: GrantRequest = read_json(req, limit).await?;
    let path = ferry_common::path::ObjectPath::parse(&body.path)
        .map_err(|e| Problem::new(ErrorCode::InvalidPath, e.to_string()))?;
    let row = find(state, &caller.account, &body.connection).await?;
    if let Some(pass) = &caller.pass {
        pass.covers_object(&row.id, path.as_str(), body.op)
            .map_err(|e| refused(state, spoke, InternalCall::Grant, &e))?;
    }
    // The connection's provider must be one this hub can use.
    operator_for(state, &row).await?;
    let use_ = match body.op {
        ferry_common::contract::GrantOp::Read => crate::limits::Use::Read,
        _ => crate::limits::Use::Write(None),
    };
    let limits = crate::limits::check(state, &caller.account, use_).await?;
    let meta = state
        .store
        .get_object(&row.id, path.as_str())
        .await
        .map_err(|e| store_problem(state, e))?;
    tracing::debug!(spoke.id = %spoke, connection.id = %row.id, op = ?body.op, "granted an object");
    let grant = issue(
        state,
        Granting {
            spoke,
            principal: caller.principal,
            account: caller.account,
            row,
            path: path.as_str().to_owned(),
            op: body.op,
            upload: None,
            meta,
            epoch,
            limits: crate::limits::transfer_limits(&limits),
        },
    )?;
    Ok(json(StatusCode::OK, &grant))
}

/// What a grant is issued for.
pub(super) struct Granting<'a> {
    /// The spoke it is issued to.
    pub spoke: &'a str,
    /// The client's principal, for read-your-writes.
    pub principal: String,
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
    /// The invalidation epoch this hub knew before authorising it.
    pub epoch: Option<i64>,
    /// The account's bandwidth limits, for the spoke to apply.
    pub limits: ferry_common::content::throttle::TransferLimits,
}

/// Signs the grant for `g`: what the spoke needs to reach the provider,
/// bound to the spoke, account, connection, path, operation and client,
/// for the tunnel's report window.
pub(super) fn issue(state: &AppState, g: Granting<'_>) -> Result<Grant, Problem> {
    let config = open_config(state, &g.row)?;
    let support = state.spokes.as_ref();
    let ttl_secs = support.map_or(30, |s| s.grant_ttl_secs);
    let window_secs = support.map_or(86_400, |s| s.report_window_secs);
    let (upload, lease) = g.upload.unzip();
    let claims = Claims {
        spoke: g.spoke.to_owned(),
        account: g.account.clone(),
        connection: g.row.id.clone(),
        path: g.path,
        op: g.op,
        principal: g.principal,
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
        epoch: g.epoch,
        limits: g.limits,
    })
}

/// `renew_certificate`: the spoke's new key signed for the name its tunnel
/// proved, if it proves it holds the key and is still enrolled with the
/// certificate its tunnel was opened with. The certificate before stays
/// valid beside the new one (see [`crate::store::Store::renew_spoke_certificate`]).
async fn renew_certificate(
    state: &AppState,
    spoke: &str,
    req: Request<Body>,
    limit: usize,
) -> ApiResult {
    let Some(support) = &state.spokes else {
        return Err(Problem::new(
            ErrorCode::TunnelDisabled,
            "this hub takes no spokes",
        ));
    };
    let body: ferry_common::contract::RenewRequest = read_json(req, limit).await?;
    let key = body
        .verified_key(spoke)
        .map_err(|e| Problem::new(ErrorCode::InvalidField, e.to_string()))?;
    let held = support.registry.certificate_of(spoke).ok_or_else(|| {
        Problem::new(
            ErrorCode::GrantRefused,
            "the spoke's tunnel is not this hub's current one",
        )
    })?;
    let cert = support
        .ca
        .issue_spoke(spoke, &key, support.spoke_cert_lifetime)
        .map_err(|e| Problem::new(ErrorCode::InvalidField, e.to_string()))?;
    if !state
        .store
        .renew_spoke_certificate(spoke, &held, cert.der())
        .await
        .map_err(|e| store_problem(state, e))?
    {
        return Err(Problem::new(
            ErrorCode::GrantRefused,
            "the spoke is revoked, or its tunnel's certificate is no longer its own",
        ));
    }
    let not_after = ferry_common::cert_time::not_after(cert.der()).unwrap_or_default();
    tracing::info!(spoke.id = %spoke, not_after, "renewed a spoke's certificate");
    Ok(json(
        StatusCode::OK,
        &ferry_common::contract::RenewAnswer {
            certificate: cert.pem(),
        },
    ))
}
