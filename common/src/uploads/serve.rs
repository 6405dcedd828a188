//! The requests that carry an upload's bytes, answered the same on every
//! node: creation (`POST`, with or without a first chunk) and appends
//! (`PATCH`). Status (`HEAD`), termination (`DELETE`) and `OPTIONS` need
//! no bytes and are answered by the hub alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyDataStream;

use crate::body::{Body, empty};
use crate::content::model::{
    Commit, Direction, EventKind, EventRecord, Intent, ObjectMeta, Origin, Transfer,
    TransferStatus, now_ms,
};
use crate::content::transfer::etag_for;
use crate::path::ObjectPath;
use crate::problem::{ErrorCode, Problem};
use crate::provider::problem as provider_problem;

use super::protocol::{self, Protocol};
use super::write::{self, AppendError};
use super::{Ending, Lease, NewUpload, Session, UploadHost};

/// What a node answers, or the request back when the hub must answer it
/// (a provider only the hub reaches).
pub type Served = Result<Response<Body>, Request<Body>>;

/// Where an upload's status lives, for `Location`.
pub fn location(id: &str) -> String {
    format!("/v1/uploads/{id}")
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim())
}

/// Whether a request has a body to read: a `Content-Length` above zero,
/// or, without one, a body that has not ended with the head (HTTP/1.1
/// chunked, or HTTP/2 and a tunnel's frames, which need no length).
pub fn carries_body(req: &Request<Body>) -> bool {
    use http_body::Body as _;
    match req.headers().get(header::CONTENT_LENGTH) {
        Some(v) => v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) != Some(0),
        None => !req.body().is_end_stream(),
    }
}

/// `POST /v1/connections/{conn}/uploads`: a new session for the object at
/// `query_path` (or the path its metadata names), with the first chunk
/// when the request carries one.
pub async fn create(
    host: Arc<dyn UploadHost>,
    connection: &str,
    query_path: Option<&str>,
    req: Request<Body>,
) -> Served {
    let protocol = match protocol::protocol_of(req.headers()) {
        Ok(p) => p,
        Err(p) => return Ok(protocol::problem(None, p)),
    };
    let headers = req.headers().clone();
    let body = carries_body(&req);
    let s3_part = req.extensions().get::<super::S3PartOf>().cloned();
    let begun = begin_create(
        &host, protocol, connection, query_path, &headers, body, s3_part,
    )
    .await;
    let (session, body_complete) = match begun {
        Ok(s) => s,
        Err(p) => return Ok(protocol::problem(Some(protocol), p)),
    };
    // What the creating request appends at offset 0, if anything: a final
    // upload is put together now, from its partial uploads; a body is the
    // first chunk; an empty upload is complete as soon as it exists.
    let first = if session.joins().is_some() {
        Some((None, Some(true)))
    } else if body {
        Some((session.length, body_complete))
    } else if session.length == Some(0) || body_complete == Some(true) {
        Some((Some(0), Some(true)))
    } else {
        None
    };
    let session = match first {
        None => session,
        Some((length, complete)) => {
            let appended = append(
                &host,
                protocol,
                &session.id,
                0,
                length,
                complete,
                req,
                false,
            );
            match appended.await {
                Ok(Ok(s)) => s,
                Ok(Err(p)) => {
                    // The session stands; the client may resume it.
                    let mut resp = protocol::problem(Some(protocol), p);
                    set_location(resp.headers_mut(), &session.id);
                    return Ok(resp);
                }
                Err(req) => return Err(req),
            }
        }
    };
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::CREATED;
    protocol::describe(protocol, &session, resp.headers_mut());
    set_location(resp.headers_mut(), &session.id);
    Ok(resp)
}

fn set_location(headers: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(&location(id)) {
        headers.insert(header::LOCATION, v);
    }
}

/// Reads a creation request's fields and makes the session: the session,
/// and the draft's `Upload-Complete` when it was sent.
async fn begin_create(
    host: &Arc<dyn UploadHost>,
    protocol: Protocol,
    connection: &str,
    query_path: Option<&str>,
    headers: &HeaderMap,
    body: bool,
    s3_part: Option<super::S3PartOf>,
) -> Result<(Session, Option<bool>), Problem> {
    let length = protocol::number(headers, "upload-length")?;
    let concat = match protocol {
        Protocol::Tus => protocol::upload_concat(headers)?,
        Protocol::Draft => None,
    };
    let joining = concat.as_deref().is_some_and(|c| c.starts_with("final;"));
    let (metadata, complete, content_type) = match protocol {
        Protocol::Tus => {
            let deferred = protocol::defer_length(headers)?;
            if joining {
                if length.is_some() || deferred || body {
                    return Err(Problem::new(
                        ErrorCode::InvalidField,
                        "a final upload takes its length from its partial uploads: no 'Upload-Length', no body",
                    ));
                }
            } else if deferred == length.is_some() {
                return Err(Problem::new(
                    ErrorCode::InvalidField,
                    "send exactly one of 'Upload-Length' and 'Upload-Defer-Length: 1'",
                ));
            }
            if body && content_type(headers) != Some(protocol::TUS_APPEND_TYPE) {
                return Err(Problem::new(
                    ErrorCode::UnsupportedMediaType,
                    format!(
                        "a first chunk must be sent as {}",
                        protocol::TUS_APPEND_TYPE
                    ),
                ));
            }
            let raw = headers
                .get("upload-metadata")
                .map(|v| {
                    v.to_str().map_err(|_| {
                        Problem::new(
                            ErrorCode::InvalidField,
                            "'Upload-Metadata' is not ASCII text",
                        )
                    })
                })
                .transpose()?
                .unwrap_or("");
            let pairs = protocol::parse_metadata(raw)?;
            let ct = protocol::metadata_value(&pairs, &["filetype", "contentType", "content-type"])
                .map(str::to_owned);
            (pairs, None, ct)
        }
        Protocol::Draft => {
            let complete = protocol::upload_complete(headers)?.ok_or_else(|| {
                Problem::new(
                    ErrorCode::InvalidField,
                    "a draft upload's creation needs 'Upload-Complete'",
                )
            })?;
            if complete && !body && length.is_some_and(|n| n > 0) {
                return Err(Problem::new(
                    ErrorCode::InvalidField,
                    "'Upload-Complete: ?1' with no content is an empty upload: 'Upload-Length' must be 0 or absent",
                ));
            }
            let ct = content_type(headers).map(str::to_owned);
            (Vec::new(), Some(complete), ct)
        }
    };
    let partial = concat.as_deref() == Some(super::CONCAT_PARTIAL);
    let path = if partial {
        // A partial upload becomes no object of its own.
        String::new()
    } else {
        let raw_path = query_path
            .or_else(|| protocol::metadata_value(&metadata, &["path", "filename", "name"]))
            .ok_or_else(|| {
                Problem::new(
                    ErrorCode::InvalidPath,
                    "name the object: '?path=' in the URL, or 'path' or 'filename' in Upload-Metadata",
                )
            })?;
        ObjectPath::parse(raw_path)
            .map_err(|e| Problem::new(ErrorCode::InvalidPath, e.to_string()))?
            .as_str()
            .to_owned()
    };
    let content_type = match content_type {
        Some(ct) if ct.len() > 255 || !ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => {
            return Err(Problem::new(
                ErrorCode::InvalidField,
                "the content type must be printable ASCII of at most 255 bytes",
            ));
        }
        ct => ct,
    };
    let session = host
        .create(
            connection,
            NewUpload {
                path,
                length,
                metadata: protocol::format_metadata(&metadata),
                content_type,
                concat,
                s3_part,
            },
        )
        .await?;
    Ok((session, complete))
}

/// `PATCH /v1/uploads/{id}`: appends the body at `Upload-Offset`.
pub async fn patch(host: Arc<dyn UploadHost>, id: &str, req: Request<Body>) -> Served {
    let protocol = match protocol::protocol_of(req.headers()) {
        Ok(p) => p,
        Err(p) => return Ok(protocol::problem(None, p)),
    };
    let fields = (|| {
        let headers = req.headers();
        let want = match protocol {
            Protocol::Tus => protocol::TUS_APPEND_TYPE,
            Protocol::Draft => protocol::DRAFT_APPEND_TYPE,
        };
        if content_type(headers) != Some(want) {
            return Err(Problem::new(
                ErrorCode::UnsupportedMediaType,
                format!("an append must be sent as {want}"),
            ));
        }
        let offset = protocol::number(headers, "upload-offset")?.ok_or_else(|| {
            Problem::new(ErrorCode::InvalidField, "an append needs 'Upload-Offset'")
        })?;
        let length = protocol::number(headers, "upload-length")?;
        let complete = match protocol {
            Protocol::Tus => None,
            Protocol::Draft => Some(protocol::upload_complete(headers)?.ok_or_else(|| {
                Problem::new(
                    ErrorCode::InvalidField,
                    "a draft append needs 'Upload-Complete'",
                )
            })?),
        };
        Ok((offset, length, complete))
    })();
    let (offset, length, complete) = match fields {
        Ok(f) => f,
        Err(p) => return Ok(protocol::problem(Some(protocol), p)),
    };
    match append(&host, protocol, id, offset, length, complete, req, true).await {
        Ok(Ok(session)) => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            protocol::describe(protocol, &session, resp.headers_mut());
            if protocol == Protocol::Tus {
                // tus's PATCH answer carries the offset and expiry only.
                for name in ["upload-length", "upload-defer-length", "upload-metadata"] {
                    resp.headers_mut().remove(name);
                }
            }
            Ok(resp)
        }
        Ok(Err(p)) => Ok(protocol::problem(Some(protocol), p)),
        Err(req) => Err(req),
    }
}

/// Takes the lease, streams the body into a part while renewing it, and
/// records the part — with the whole object, when it is the last.
#[allow(clippy::too_many_arguments)]
async fn append(
    host: &Arc<dyn UploadHost>,
    protocol: Protocol,
    id: &str,
    offset: u64,
    length: Option<u64>,
    complete: Option<bool>,
    req: Request<Body>,
    patching: bool,
) -> Result<Result<Session, Problem>, Request<Body>> {
    let (lease, target) = match host.begin(id, offset, length).await {
        Ok(Some(l)) => l,
        Ok(None) => return Err(req),
        Err(p) => return Ok(Err(p)),
    };
    let joining = lease.session.joins().is_some();
    if joining && patching {
        host.release(&lease).await;
        return Ok(Err(Problem::new(
            ErrorCode::UploadIsFinal,
            "a final upload takes no bytes of its own",
        )));
    }
    let checksum = match protocol {
        Protocol::Tus => protocol::upload_checksum(req.headers()),
        Protocol::Draft => Ok(None),
    };
    let checksum = match checksum {
        Ok(c) => c,
        Err(p) => {
            host.release(&lease).await;
            return Ok(Err(p));
        }
    };
    let result = write_and_record(host, &lease, &target, complete, checksum, req).await;
    Ok(result)
}

/// Keeps the lease while the bytes stream and while the parts are put
/// together, so that a long completion does not lose it; `lost` tells the
/// stream when it is lost all the same.
async fn write_and_record(
    host: &Arc<dyn UploadHost>,
    lease: &Lease,
    target: &crate::content::Target,
    complete: Option<bool>,
    checksum: Option<(protocol::ChunkAlgorithm, Vec<u8>)>,
    req: Request<Body>,
) -> Result<Session, Problem> {
    let lost = Arc::new(AtomicBool::new(false));
    let renewing = async {
        loop {
            tokio::time::sleep(Duration::from_millis(super::LEASE_RENEW_MS)).await;
            if let Err(p) = host.renew(lease).await {
                tracing::info!(upload.id = %lease.session.id, problem = %p, "lost an upload's lease while writing");
                lost.store(true, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        r = work(host, lease, target, complete, checksum, req, lost.clone()) => r,
        () = renewing => unreachable!("renewing never ends"),
    }
}

async fn work(
    host: &Arc<dyn UploadHost>,
    lease: &Lease,
    target: &crate::content::Target,
    complete: Option<bool>,
    checksum: Option<(protocol::ChunkAlgorithm, Vec<u8>)>,
    req: Request<Body>,
    lost: Arc<AtomicBool>,
) -> Result<Session, Problem> {
    let session = &lease.session;
    let offset = session.offset;
    let meta = host.meta();
    let scheme = target.op.info().scheme();
    let count = |n| meta.count_bytes(Direction::Upload, scheme, n);
    let _active = crate::content::Active::start(meta.clone());
    if session.joins().is_some() {
        return join(host, &meta, lease, target).await;
    }
    let body_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let ends = complete == Some(true)
        || body_len.is_some_and(|n| session.length == Some(offset.saturating_add(n)));
    // Parts are recorded while the body streams, unless a checksum says
    // the chunk counts whole or not at all.
    let checkpoint = |parts| host.checkpoint(lease, parts);
    let to = write::AppendTo {
        target,
        session,
        parts: &lease.parts,
        token: &lease.token,
        body_len,
        ends,
        checkpoint: checksum
            .is_none()
            .then_some(&checkpoint as &write::Checkpoint<'_>),
    };
    let appended = write::append(
        to,
        BodyDataStream::new(req.into_body()),
        checksum,
        lost,
        &count,
    )
    .await;
    let appended = match appended {
        Ok(a) => a,
        Err(e) => {
            host.release(lease).await;
            if let AppendError::Cut(cause) = &e {
                tracing::info!(upload.id = %session.id, error = %cause, "an append with a checksum was cut; discarded");
            }
            return Err(e.problem(scheme));
        }
    };
    if let Some(cause) = &appended.cut {
        tracing::info!(upload.id = %session.id, error = %cause, "an append was cut; keeping the bytes that arrived");
    }
    let written = || appended.recorded.iter().chain(&appended.parts);
    let total = written().last().map_or(offset, |p| p.offset + p.size);
    // Every part now: those before this append's first (which may take
    // the place of the last), then this append's.
    let mut parts = lease.parts.clone();
    if let Some(first) = written().next() {
        parts.retain(|p| p.offset < first.offset);
    }
    parts.extend(written().cloned());
    let length = match (session.length, complete) {
        (Some(n), Some(true)) if n != total => {
            host.release(lease).await;
            return Err(Problem::new(
                ErrorCode::InvalidField,
                format!("'Upload-Complete: ?1' at {total} bytes, but the upload's length is {n}"),
            ));
        }
        (Some(n), _) => Some(n),
        (None, Some(true)) if appended.cut.is_none() => Some(total),
        (None, _) => None,
    };
    // The object's path stays locked on this node from the assembly to
    // the record, as a plain upload's does.
    let mut guard = None;
    if length == Some(total)
        && session.is_partial()
        && let Err(p) = complete_partial(target, session, &parts).await
    {
        host.release(lease).await;
        return Err(p);
    }
    let ending = if length == Some(total) && !session.is_partial() {
        guard = Some(meta.lock(&session.connection_id, &session.path).await);
        match finish(&meta, lease, target, &parts, total).await {
            Ok(commit) => Ending::Complete(Box::new(commit)),
            Err(p) => {
                host.release(lease).await;
                return Err(p);
            }
        }
    } else {
        Ending::More
    };
    let done = matches!(ending, Ending::Complete(_));
    let recorded = host.append(lease, appended.parts, ending).await;
    drop(guard);
    if done && recorded.is_ok() {
        let op = target.op.clone();
        let id = session.id.clone();
        tokio::spawn(async move { write::discard(&op, &id).await });
    }
    recorded
}

/// A partial upload on S3 or Azure Blob, its last byte in: its parts put
/// together at its staging object, for the final upload to take them from.
async fn complete_partial(
    target: &crate::content::Target,
    session: &Session,
    parts: &[super::Part],
) -> Result<(), Problem> {
    let (Some(m), Some(upload)) = (&target.multipart, &session.provider_upload) else {
        return Ok(());
    };
    let scheme = target.op.info().scheme();
    let done = if parts.is_empty() {
        // No byte came (its length was deferred): an empty object, and
        // what the provider started abandoned.
        write::abandon(m, session, upload).await;
        target
            .op
            .write(&super::partial_object(&session.id), Vec::<u8>::new())
            .await
            .map(|_| ())
    } else {
        write::complete_native(target, m, session, upload, parts).await
    };
    done.map_err(|e| provider_problem(&e, scheme, "write"))
}

/// A final upload: its partial uploads' parts put together at its path,
/// recorded with the object; then the partial uploads' parts removed.
async fn join(
    host: &Arc<dyn UploadHost>,
    meta: &Arc<dyn crate::content::MetaHost>,
    lease: &Lease,
    target: &crate::content::Target,
) -> Result<Session, Problem> {
    let session = &lease.session;
    let total = session.length.unwrap_or(0);
    let guard = meta.lock(&session.connection_id, &session.path).await;
    let commit = match finish(meta, lease, target, &lease.parts, total).await {
        Ok(c) => c,
        Err(p) => {
            drop(guard);
            host.release(lease).await;
            return Err(p);
        }
    };
    let recorded = host
        .append(lease, Vec::new(), Ending::Complete(Box::new(commit)))
        .await;
    drop(guard);
    if recorded.is_ok() {
        let op = target.op.clone();
        let ids: Vec<String> = session
            .joins()
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect();
        tokio::spawn(async move {
            for id in ids {
                write::discard(&op, &id).await;
            }
        });
    }
    recorded
}

/// Puts the parts together at the session's path: the commit that records
/// the object.
async fn finish(
    meta: &Arc<dyn crate::content::MetaHost>,
    lease: &Lease,
    target: &crate::content::Target,
    parts: &[super::Part],
    total: u64,
) -> Result<Commit, Problem> {
    let session = &lease.session;
    let started = Instant::now();
    let scheme = target.op.info().scheme();
    let existed = match target.op.stat(&session.path).await {
        Ok(s) if s.is_dir() => {
            return Err(Problem::new(
                ErrorCode::NotAFile,
                format!("'{}' is a folder", session.path),
            ));
        }
        Ok(_) => true,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => false,
        Err(e) => return Err(provider_problem(&e, scheme, "stat")),
    };
    // What will be recorded, known before the parts are put together: the
    // completion records its intent first, so it takes its turn with the
    // other changes to the path (see `MetaHost::intend`), replacing
    // whatever is recorded there now.
    let crc = write::combined_crc(0, parts);
    let now = now_ms();
    let mut change = Commit {
        remove: Vec::new(),
        upsert: Some(ObjectMeta {
            generation: 0,
            connection_id: session.connection_id.clone(),
            path: session.path.clone(),
            size: total as i64,
            crc64nvme: crc,
            sha256: None,
            content_type: session.content_type.clone(),
            etag: etag_for(crc, total),
            provider_modified_ms: None,
            updated_at: now,
            headers: Vec::new(),
        }),
        event: Some(EventRecord {
            account_id: session.account_id.clone(),
            connection_id: session.connection_id.clone(),
            kind: if existed {
                EventKind::Updated
            } else {
                EventKind::Created
            },
            path: session.path.clone(),
            from_path: None,
            size: Some(total as i64),
            at: now,
            origin: Origin::Ferry,
        }),
        transfer: None,
        folder: None,
        intent: None,
    };
    let replaces =
        crate::content::transfer::replaced(&**meta, &session.connection_id, &session.path, None)
            .await?;
    let intent = Intent {
        connection_id: session.connection_id.clone(),
        path: session.path.clone(),
        expect: Some((total, crc)),
        also_absent: None,
        replaces,
        source: None,
        conditional: false,
        change: change.clone(),
    };
    change.intent = meta.intend(&intent).await?;
    // Given up if this ends before the parts are in place and the change
    // is handed on to be recorded (the provider failed, or the request
    // went away).
    let claim = crate::content::Claimed::new(&**meta, change.intent.clone());
    let native = target
        .multipart
        .as_ref()
        .zip(session.provider_upload.as_ref());
    let put = async {
        if session.joins().is_some() {
            return write::join(target, session, parts).await;
        }
        match native {
            Some((m, upload)) if !parts.is_empty() => {
                write::complete_native(target, m, session, upload, parts).await
            }
            _ if parts.is_empty() => {
                if let Some((m, upload)) = native {
                    write::abandon(m, session, upload).await;
                }
                target
                    .op
                    .write(&session.path, Vec::<u8>::new())
                    .await
                    .map(|_| ())
            }
            _ => {
                write::assemble(
                    &target.op,
                    parts,
                    &session.path,
                    session.content_type.as_deref(),
                )
                .await
            }
        }
    };
    put.await
        .map_err(|e| provider_problem(&e, scheme, "write"))?;
    let modified = target
        .op
        .stat(&session.path)
        .await
        .ok()
        .and_then(|s| s.last_modified())
        .map(|t| t.into_inner().as_millisecond());
    let mut transfer = Transfer::start(
        &session.account_id,
        &session.connection_id,
        &session.path,
        Direction::Upload,
        meta.via(),
    );
    transfer.status = TransferStatus::Complete;
    transfer.bytes = total as i64;
    transfer.crc64nvme = Some(crc);
    transfer.duration_ms = started.elapsed().as_millis() as i64;
    meta.transfer_ended(&transfer);
    if let Some(m) = change.upsert.as_mut() {
        m.provider_modified_ms = modified;
    }
    change.transfer = Some(transfer);
    claim.done();
    Ok(change)
}
