//! Resumable uploads at the hub: the routes clients call
//! (`/v1/connections/{conn}/uploads`, `/v1/uploads/{id}`), the sessions'
//! host for appends the hub carries itself, the spokes' upload calls, and
//! the sweep of expired sessions.

use std::sync::Arc;
use std::time::Duration;

use ferry_common::body::Body;
use ferry_common::content::model::now_ms;
use ferry_common::content::{MetaHost, Target};
use ferry_common::contract::{
    GrantOp, InternalCall, UploadAppendRequest, UploadBeginRequest, UploadBegun,
    UploadCreateRequest, UploadLeaseRequest,
};
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::uploads::protocol::{self, Protocol};
use ferry_common::uploads::{self as up, Ending, Lease, NewUpload, Part, Session, UploadHost};
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use super::auth::require_account;
use super::connections::find;
use super::http_util::{json, no_content, read_json};
use super::operators::{open_config, operator_for};
use super::{AppState, HubHost, VIA_HUB, store_problem, writable};
use crate::store::{AppendEnd, ConnectionRow, LeaseAsk, UploadRefusal};
use ferry_common::provider::answer::observed;
use ferry_common::provider::native::{AZURE_BLOCKS, Multipart};
use ferry_common::provider::problem as provider_problem;
use ferry_common::provider::s3_parts;

/// The `[uploads]` settings requests need.
#[derive(Debug, Clone, Copy)]
pub struct UploadSettings {
    /// A session's life after its last append, in milliseconds.
    pub expiry_ms: i64,
    /// The largest upload.
    pub max_size: u64,
}

impl Default for UploadSettings {
    fn default() -> Self {
        let d = crate::config::UploadsConfig::default();
        Self::from(&d)
    }
}

impl From<&crate::config::UploadsConfig> for UploadSettings {
    fn from(c: &crate::config::UploadsConfig) -> Self {
        Self {
            expiry_ms: i64::try_from(c.expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            max_size: c.max_size_bytes,
        }
    }
}

fn refusal(state: &AppState, r: UploadRefusal) -> Problem {
    match r {
        UploadRefusal::NotFound => Problem::new(ErrorCode::UploadNotFound, "no such upload"),
        UploadRefusal::Expired => Problem::new(
            ErrorCode::UploadExpired,
            "the upload expired and its bytes were discarded",
        ),
        UploadRefusal::Offset(at) => Problem::offset_mismatch(at, u64::MAX),
        UploadRefusal::Locked => Problem::new(
            ErrorCode::UploadLocked,
            "another request is writing to this upload; retry shortly",
        )
        .with_retry_after(1),
        UploadRefusal::LeaseLost => Problem::new(
            ErrorCode::UploadLocked,
            "another request took this upload over; the chunk was not recorded",
        ),
        UploadRefusal::Invalid(why) => Problem::new(ErrorCode::InvalidField, why),
        UploadRefusal::TooLarge(why) => Problem::new(ErrorCode::UploadTooLarge, why),
        UploadRefusal::Final => Problem::new(
            ErrorCode::UploadIsFinal,
            "a final upload takes no bytes of its own",
        ),
        UploadRefusal::Store(e) => store_problem(state, e),
    }
}

/// A refusal of a lease for `offset`, with the offset the client gave.
fn lease_refusal(state: &AppState, r: UploadRefusal, offset: u64) -> Problem {
    match r {
        UploadRefusal::Offset(at) => Problem::offset_mismatch(at, offset),
        other => refusal(state, other),
    }
}

/// Whether the holder of a lease is gone, as far as this hub can tell: a
/// spoke with no tunnel here. (A hub's own writes hold the lease as
/// `hub`; they end with their request.)
fn gone(state: &AppState) -> impl Fn(&str) -> bool + Sync + '_ {
    move |holder: &str| {
        holder != VIA_HUB
            && state
                .spokes
                .as_ref()
                .is_some_and(|s| !s.registry.is_live(holder))
    }
}

/// Makes a session of `account` in `connection` (name or id).
async fn create_session(
    state: &AppState,
    account: &str,
    connection: &str,
    new: NewUpload,
) -> Result<Session, Problem> {
    let partial = new.concat.as_deref() == Some(up::CONCAT_PARTIAL);
    let path = if partial {
        None
    } else {
        Some(
            ferry_common::path::ObjectPath::parse(&new.path)
                .map_err(|e| Problem::new(ErrorCode::InvalidPath, e.to_string()))?,
        )
    };
    if partial && !new.path.is_empty() {
        return Err(Problem::new(
            ErrorCode::InvalidPath,
            "a partial upload names no object",
        ));
    }
    if new.length.is_some_and(|n| n > state.uploads.max_size) {
        return Err(Problem::new(
            ErrorCode::UploadTooLarge,
            format!("uploads here are at most {} bytes", state.uploads.max_size),
        ));
    }
    // The quota is checked again as bytes come (each append).
    crate::limits::check(state, account, crate::limits::Use::Write(new.length)).await?;
    if new.metadata.len() > protocol::MAX_METADATA_BYTES
        || new.content_type.as_ref().is_some_and(|c| c.len() > 255)
    {
        return Err(Problem::new(
            ErrorCode::InvalidField,
            "the upload's metadata or content type is too long",
        ));
    }
    let row = find(state, account, connection).await?;
    if let Some(part) = &new.s3_part {
        // An S3 part: of a multipart upload started in this bucket.
        let upload = state
            .store
            .get_multipart(account, &part.upload)
            .await
            .map_err(|e| store_problem(state, e))?;
        if !partial
            || !(1..=s3_parts::MAX_PARTS).contains(&part.number)
            || upload.is_none_or(|u| u.connection_id != row.id)
        {
            return Err(Problem::new(
                ErrorCode::UploadNotFound,
                "no such multipart upload in this bucket",
            ));
        }
    }
    let op = operator_for(state, &row).await?;
    let target = Target {
        account_id: account.to_owned(),
        connection_id: row.id.clone(),
        op,
        multipart: None,
        throttle: Default::default(),
        pacing: Some(state.pacing.clone()),
    };
    if let Some(path) = &path {
        ferry_common::content::files::staged_name_fits(&target, path)?;
    }
    writable(state).await?;
    // On S3 the bytes go into one multipart upload, started here: at the
    // object's path (or a partial upload's staging object), so that the
    // object appears whole when it completes. An empty upload needs none,
    // and a final upload makes its own when it joins its partial uploads.
    let joining = new
        .concat
        .as_deref()
        .is_some_and(|c| c.starts_with("final;"));
    let id = crate::store::new_upload_id();
    // The session's provider upload, and what to abandon should the
    // session not be made.
    let (provider_upload, started) = match multipart_for(state, &row)?.as_deref() {
        Some(Multipart::S3(s3)) if !joining && new.length != Some(0) => {
            let key = if partial {
                up::partial_object(&id)
            } else {
                new.path.clone()
            };
            let upload = observed(s3.create(&key, new.content_type.as_deref()))
                .await
                .map_err(|e| provider_problem(&e, "s3", "write"))?;
            (Some(upload.clone()), Some((s3.clone(), key, upload)))
        }
        // Azure needs nothing started: the blocks go to the session's
        // staging blob.
        Some(Multipart::Azure(_)) if !joining && new.length != Some(0) => {
            (Some(AZURE_BLOCKS.to_owned()), None)
        }
        _ => (None, None),
    };
    let created = state
        .store
        .create_upload(
            &id,
            account,
            &row.id,
            &new,
            state.uploads.max_size,
            now_ms().saturating_add(state.uploads.expiry_ms),
            provider_upload.as_deref(),
        )
        .await
        .map_err(|r| refusal(state, r));
    if created.is_err()
        && let Some((s3, key, upload)) = started
        && let Err(e) = s3.abort(&key, &upload).await
    {
        tracing::warn!(error = %e, "could not abandon the multipart upload of a session not made");
    }
    created
}

/// The multipart calls of a stored S3 connection.
fn multipart_for(state: &AppState, row: &ConnectionRow) -> Result<Option<Arc<Multipart>>, Problem> {
    if !Multipart::serves(&row.provider) {
        return Ok(None);
    }
    let config = open_config(state, row)?;
    Ok(Multipart::of(&row.provider, &config, state.providers.endpoint_policy()).map(Arc::new))
}

/// The hub's sessions host for one client request.
struct HubUploads {
    state: Arc<AppState>,
    account: String,
    meta: Arc<HubHost>,
}

impl UploadHost for HubUploads {
    fn create<'a>(
        &'a self,
        connection: &'a str,
        new: NewUpload,
    ) -> BoxFuture<'a, Result<Session, Problem>> {
        Box::pin(create_session(&self.state, &self.account, connection, new))
    }

    fn begin<'a>(
        &'a self,
        id: &'a str,
        offset: u64,
        length: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<(Lease, Target)>, Problem>> {
        Box::pin(async move {
            let state = &self.state;
            let (lease, took_over) = state
                .store
                .lease_upload(
                    &LeaseAsk {
                        account: &self.account,
                        id,
                        offset,
                        length,
                        holder: VIA_HUB,
                        max_size: state.uploads.max_size,
                    },
                    &gone(state),
                )
                .await
                .map_err(|r| lease_refusal(state, r, offset))?;
            count_lease(state, &lease, took_over);
            let reached = async {
                let row = find(state, &self.account, &lease.session.connection_id).await?;
                let op = operator_for(state, &row).await?;
                let multipart = multipart_for(state, &row)?;
                let throttle =
                    crate::limits::admit(state, &self.account, crate::limits::Use::Write(None))
                        .await?;
                Ok::<_, Problem>(Target {
                    account_id: self.account.clone(),
                    connection_id: row.id,
                    op,
                    multipart,
                    throttle,
                    pacing: Some(state.pacing.clone()),
                })
            };
            let target = match reached.await {
                Ok(t) => t,
                Err(p) => {
                    self.release(&lease).await;
                    return Err(p);
                }
            };
            Ok(Some((lease, target)))
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), Problem>> {
        Box::pin(renew(&self.state, &lease.session.id, &lease.token))
    }

    fn append<'a>(
        &'a self,
        lease: &'a Lease,
        parts: Vec<Part>,
        ending: Ending,
    ) -> BoxFuture<'a, Result<Session, Problem>> {
        Box::pin(async move {
            let end = match &ending {
                Ending::More => AppendEnd::Release,
                Ending::Complete(c) => AppendEnd::Complete(c),
            };
            record(&self.state, &lease.session.id, &lease.token, &parts, end).await
        })
    }

    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        parts: Vec<Part>,
    ) -> BoxFuture<'a, Result<(), Problem>> {
        Box::pin(async move {
            record(
                &self.state,
                &lease.session.id,
                &lease.token,
                &parts,
                AppendEnd::Keep,
            )
            .await
            .map(|_| ())
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(release(&self.state, &lease.session.id, &lease.token))
    }

    fn meta(&self) -> Arc<dyn MetaHost> {
        self.meta.clone()
    }
}

fn count_lease(state: &AppState, lease: &Lease, took_over: bool) {
    if lease.session.offset > 0 {
        state.metrics.uploads.resumptions.inc();
    }
    if took_over {
        state.metrics.uploads.lease_takeovers.inc();
        tracing::info!(upload.id = %lease.session.id, "took an upload's lease over from a writer that was gone or asked again");
    }
}

async fn renew(state: &AppState, id: &str, token: &str) -> Result<(), Problem> {
    match state.store.renew_upload_lease(id, token).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(refusal(state, UploadRefusal::LeaseLost)),
        Err(e) => Err(store_problem(state, e)),
    }
}

async fn release(state: &AppState, id: &str, token: &str) {
    if let Err(e) = state.store.release_upload_lease(id, token).await {
        tracing::warn!(error = %e, upload.id = %id, "could not release an upload's lease; it runs out by itself");
    }
}

async fn record(
    state: &AppState,
    id: &str,
    token: &str,
    parts: &[Part],
    end: AppendEnd<'_>,
) -> Result<Session, Problem> {
    let (session, added) = state
        .store
        .append_upload(
            id,
            token,
            parts,
            end,
            state.uploads.max_size,
            now_ms().saturating_add(state.uploads.expiry_ms),
        )
        .await
        .map_err(|r| refusal(state, r))?;
    state.metrics.uploads.bytes_appended.inc_by(added);
    if matches!(end, AppendEnd::Complete(_)) {
        state.metrics.uploads.completed.inc();
    }
    Ok(session)
}

pub(super) fn host<B>(
    state: &Arc<AppState>,
    account: String,
    req: &Request<B>,
) -> Arc<dyn UploadHost> {
    Arc::new(HubUploads {
        state: state.clone(),
        account,
        meta: Arc::new(HubHost::new(state.clone(), super::node_of(req))),
    })
}

/// The `path` query parameter, if the request has one.
fn query_path(req: &Request<Body>) -> Result<Option<String>, Problem> {
    let pairs = super::routes::query_pairs(req.uri().query())
        .map_err(|_| Problem::new(ErrorCode::InvalidQuery, "the query is not valid"))?;
    Ok(pairs.into_iter().find(|(k, _)| k == "path").map(|(_, v)| v))
}

/// A refusal in the words of the protocol the request speaks, if it
/// names one.
fn refused(headers: &http::HeaderMap, p: Problem) -> Response<Body> {
    protocol::problem(protocol::protocol_of(headers).ok(), p)
}

/// The account of the request's key. Credentials come first, as on every
/// route: a request without them learns nothing, not even which protocol
/// fields it lacks.
async fn account_of(state: &AppState, headers: &http::HeaderMap) -> Result<String, Response<Body>> {
    require_account(state, headers)
        .await
        .map_err(|p| refused(headers, p))
}

/// `POST` and `OPTIONS` of `/v1/connections/{conn}/uploads`.
pub async fn create(
    state: &Arc<AppState>,
    conn: &str,
    req: Request<Body>,
) -> Result<Response<Body>, Problem> {
    if req.method() == Method::OPTIONS {
        return Ok(protocol::options(state.uploads.max_size));
    }
    let account = match account_of(state, req.headers()).await {
        Ok(a) => a,
        Err(resp) => return Ok(resp),
    };
    let path = match query_path(&req) {
        Ok(p) => p,
        Err(p) => return Ok(refused(req.headers(), p)),
    };
    let host = host(state, account, &req);
    Ok(up::serve::create(host, conn, path.as_deref(), req)
        .await
        .unwrap_or_else(|_| {
            protocol::problem(
                None,
                Problem::new(ErrorCode::Internal, "the hub cannot hand this upload on"),
            )
        }))
}

/// `HEAD`, `PATCH`, `DELETE` and `OPTIONS` of `/v1/uploads/{id}`.
pub async fn upload(
    state: &Arc<AppState>,
    id: &str,
    req: Request<Body>,
) -> Result<Response<Body>, Problem> {
    if req.method() == Method::OPTIONS {
        return Ok(protocol::options(state.uploads.max_size));
    }
    let account = match account_of(state, req.headers()).await {
        Ok(a) => a,
        Err(resp) => return Ok(resp),
    };
    let proto = match protocol::protocol_of(req.headers()) {
        Ok(p) => p,
        Err(p) => return Ok(protocol::problem(None, p)),
    };
    let answer = match *req.method() {
        Method::PATCH => {
            let host = host(state, account, &req);
            return Ok(up::serve::patch(host, id, req).await.unwrap_or_else(|_| {
                protocol::problem(
                    Some(proto),
                    Problem::new(ErrorCode::Internal, "the hub cannot hand this upload on"),
                )
            }));
        }
        Method::DELETE => terminate(state, &account, id).await.map(|mut resp| {
            protocol::decorate(proto, resp.headers_mut());
            resp
        }),
        _ => status(state, proto, &account, id).await,
    };
    Ok(answer.unwrap_or_else(|p| protocol::problem(Some(proto), p)))
}

async fn status(
    state: &AppState,
    proto: Protocol,
    account: &str,
    id: &str,
) -> Result<Response<Body>, Problem> {
    let mut session = state
        .store
        .get_upload(account, id)
        .await
        .map_err(|e| store_problem(state, e))?
        .ok_or_else(|| refusal(state, UploadRefusal::NotFound))?;
    session.max_size = state.uploads.max_size;
    if session.status == up::Status::Expired
        || session.status == up::Status::Open && session.expires_at < now_ms()
    {
        return Err(refusal(state, UploadRefusal::Expired));
    }
    let mut resp = Response::new(ferry_common::body::empty());
    *resp.status_mut() = match proto {
        Protocol::Tus => StatusCode::OK,
        Protocol::Draft => StatusCode::NO_CONTENT,
    };
    protocol::describe(proto, &session, resp.headers_mut());
    Ok(resp)
}

pub(super) async fn terminate(
    state: &AppState,
    account: &str,
    id: &str,
) -> Result<Response<Body>, Problem> {
    writable(state).await?;
    let session = state
        .store
        .delete_upload(account, id)
        .await
        .map_err(|e| store_problem(state, e))?
        .ok_or_else(|| refusal(state, UploadRefusal::NotFound))?;
    if let Ok(row) = find(state, account, &session.connection_id).await {
        discard_parts(state, &row, &session).await;
    }
    tracing::info!(upload.id = %id, "upload terminated");
    Ok(no_content())
}

/// Removes what a session left at the provider: its multipart upload,
/// abandoned, and its staged parts (best effort).
async fn discard_parts(state: &AppState, row: &ConnectionRow, session: &Session) {
    let id = &session.id;
    if let Some(upload) = &session.provider_upload {
        match multipart_for(state, row) {
            Ok(Some(m)) => up::write::abandon(&m, session, upload).await,
            Ok(None) => {}
            Err(p) => {
                tracing::warn!(upload.id = %id, problem = %p, "cannot reach an upload's provider to abandon its multipart upload")
            }
        }
    }
    match operator_for(state, row).await {
        Ok(op) => up::write::discard(&op, id).await,
        Err(p) => {
            tracing::warn!(upload.id = %id, problem = %p, "cannot reach an upload's provider to remove its parts")
        }
    }
}

/// The multipart uploads a connection's open sessions hold at the
/// provider: read before the connection is deleted (its sessions go with
/// it), abandoned after with [`abandon`].
pub async fn held_multipart(
    state: &AppState,
    row: &ConnectionRow,
) -> Option<(Arc<Multipart>, Vec<Session>)> {
    let s3 = multipart_for(state, row).ok().flatten()?;
    match state.store.multipart_sessions(&row.id).await {
        Ok(sessions) if !sessions.is_empty() => Some((s3, sessions)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(connection.id = %row.id, error = %e, "could not list a deleted connection's multipart uploads");
            None
        }
    }
}

/// Abandons what [`held_multipart`] found (best effort).
pub async fn abandon(held: Option<(Arc<Multipart>, Vec<Session>)>) {
    let Some((m, sessions)) = held else { return };
    for s in sessions {
        if let Some(upload) = &s.provider_upload {
            up::write::abandon(&m, &s, upload).await;
        }
    }
}

/// Removes expired sessions' parts and marks them expired, every
/// `interval`, until `stop`; forgets ended sessions a day after they ended.
pub async fn sweep(state: Arc<AppState>, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if !state.store.writable() {
            continue;
        }
        let now = now_ms();
        match state.store.expired_uploads(now, 100).await {
            Ok(expired) => {
                for s in expired {
                    if let Ok(row) = find(&state, &s.account_id, &s.connection_id).await {
                        discard_parts(&state, &row, &s).await;
                    }
                    match state.store.expire_upload(&s.id, now).await {
                        Ok(true) => {
                            state.metrics.uploads.expired.inc();
                            tracing::info!(upload.id = %s.id, "upload expired; its parts were removed");
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "could not mark an upload expired"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list expired uploads"),
        }
        if let Err(e) = state.store.purge_uploads(now - 86_400_000).await {
            tracing::warn!(error = %e, "could not forget ended uploads");
        }
        // Spokes send a report again only within its grant's report window
        // (at most 30 days): the ids of older ones are not needed.
        if let Err(e) = state
            .store
            .forget_applied_reports(now - 31 * 86_400_000)
            .await
        {
            tracing::warn!(error = %e, "could not forget old report ids");
        }
        match state.store.open_uploads().await {
            Ok(n) => {
                state.metrics.uploads.open.set(n);
            }
            Err(e) => tracing::debug!(error = %e, "could not count open uploads"),
        }
    }
}

/// The spokes' upload calls (see `ferry_common::contract::upload`).
pub async fn internal(
    state: &AppState,
    spoke: &str,
    call: InternalCall,
    req: Request<Body>,
    limit: usize,
) -> Result<Response<Body>, Problem> {
    match call {
        InternalCall::UploadCreate => {
            let caller = super::internal::caller(state, spoke, call, req.headers()).await?;
            let body: UploadCreateRequest = read_json(req, limit).await?;
            if let Some(pass) = &caller.pass {
                // An S3 part: a partial upload of the pass's connection.
                let row = find(state, &caller.account, &body.connection).await?;
                pass.covers_part(&row.id)
                    .and_then(|()| {
                        (body.upload.concat.as_deref() == Some(up::CONCAT_PARTIAL)
                            && body.upload.s3_part.as_ref().map(|p| &p.upload)
                                == pass.s3_upload.as_ref())
                        .then_some(())
                        .ok_or(crate::grant::GrantError::Outside(
                            "an upload that is no part of this multipart upload",
                        ))
                    })
                    .map_err(|e| super::internal::refused(state, spoke, call, &e))?;
            }
            let session =
                create_session(state, &caller.account, &body.connection, body.upload).await?;
            Ok(json(StatusCode::OK, &session))
        }
        InternalCall::UploadBegin => {
            let epoch = state.store.observed_epoch();
            let caller = super::internal::caller(state, spoke, call, req.headers()).await?;
            let account = caller.account;
            let body: UploadBeginRequest = read_json(req, limit).await?;
            let session = state
                .store
                .get_upload(&account, &body.id)
                .await
                .map_err(|e| store_problem(state, e))?
                .ok_or_else(|| refusal(state, UploadRefusal::NotFound))?;
            if let Some(pass) = &caller.pass {
                pass.covers_part(&session.connection_id)
                    .and_then(|()| {
                        session
                            .is_partial()
                            .then_some(())
                            .ok_or(crate::grant::GrantError::Outside(
                                "an upload that is no part",
                            ))
                    })
                    .map_err(|e| super::internal::refused(state, spoke, call, &e))?;
            }
            let row = find(state, &account, &session.connection_id).await?;
            let direct = super::internal::direct(&row.provider);
            // Before the lease: a refused append holds nothing.
            let limits =
                crate::limits::check(state, &account, crate::limits::Use::Write(None)).await?;
            let lease = if direct {
                let (lease, took_over) = state
                    .store
                    .lease_upload(
                        &LeaseAsk {
                            account: &account,
                            id: &body.id,
                            offset: body.offset,
                            length: body.length,
                            holder: spoke,
                            max_size: state.uploads.max_size,
                        },
                        &gone(state),
                    )
                    .await
                    .map_err(|r| lease_refusal(state, r, body.offset))?;
                count_lease(state, &lease, took_over);
                Some(lease)
            } else {
                None
            };
            let grant = super::internal::issue(
                state,
                super::internal::Granting {
                    spoke,
                    principal: caller.principal,
                    account,
                    path: session.path.clone(),
                    row,
                    op: GrantOp::Upload,
                    upload: Some((body.id.clone(), lease.as_ref().map(|l| l.token.clone()))),
                    meta: None,
                    epoch,
                    limits: crate::limits::transfer_limits(&limits),
                },
            )?;
            Ok(json(StatusCode::OK, &UploadBegun { lease, grant }))
        }
        InternalCall::UploadRenew | InternalCall::UploadRelease | InternalCall::UploadAppend => {
            let claims = super::internal::grant_of(state, &req)
                .unwrap_or(Err(crate::grant::GrantError::Missing))
                .map_err(|e| super::internal::refused(state, spoke, call, &e))?;
            let outside = |e| super::internal::refused(state, spoke, call, &e);
            if call == InternalCall::UploadAppend {
                let body: UploadAppendRequest = read_json(req, limit).await?;
                claims
                    .check_upload(&body.id, &body.lease)
                    .map_err(outside)?;
                if let Some(c) = &body.complete {
                    let recorded = super::internal::recorded(state, &claims).await?;
                    claims
                        .check_commit(c, spoke, recorded.as_ref())
                        .map_err(outside)?;
                    super::internal::own_intent(state, c, spoke, call).await?;
                }
                let end = match (&body.complete, body.keep) {
                    (Some(c), false) => AppendEnd::Complete(c),
                    (None, false) => AppendEnd::Release,
                    (None, true) => AppendEnd::Keep,
                    (Some(_), true) => {
                        return Err(Problem::new(
                            ErrorCode::InvalidField,
                            "a completion releases the lease: 'keep' cannot come with it",
                        ));
                    }
                };
                let session = record(state, &body.id, &body.lease, &body.parts, end).await?;
                return Ok(json(StatusCode::OK, &session));
            }
            let body: UploadLeaseRequest = read_json(req, limit).await?;
            claims
                .check_upload(&body.id, &body.lease)
                .map_err(outside)?;
            if call == InternalCall::UploadRenew {
                renew(state, &body.id, &body.lease).await?;
            } else {
                release(state, &body.id, &body.lease).await;
            }
            Ok(no_content())
        }
        _ => Err(Problem::new(
            ErrorCode::RouteNotFound,
            "no route matches this path",
        )),
    }
}
