//! `PUT|GET|HEAD|DELETE /v1/connections/{conn}/files/{path}`: file content.
//!
//! Uploads stream into the provider and become visible only once every byte
//! has arrived and matched the checksums the client sent; downloads stream
//! out of the provider. Neither is ever held whole in memory.

use std::time::Instant;

use crate::body::{Body, empty};
use crate::checksum::{
    CRC64NVME_HEADER, DigestAlgorithm, decode_crc64, encode_crc64, format_repr_digest,
    parse_repr_digest, parse_want_digest,
};
use crate::path::ObjectPath;
use crate::problem::{ErrorCode, Problem};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyDataStream;
use serde_json::json;

use std::sync::Arc;

use super::conditional::{self, RangeRequest, Verdict};
use super::model::{
    Commit, Direction, EventKind, EventRecord, Intent, KeptHeaders, ObjectMeta, Origin, Transfer,
    TransferStatus, now_ms,
};
use super::transfer::{
    DownloadInfo, ObjectView, StageError, checksums_of, current, download_body, etag_for,
    read_stream, replaced, stage,
};
use super::{Claimed, MetaHost, Target};
use crate::provider::answer::observed;
use crate::provider::problem as provider_problem;

type Answer = Result<Response<Body>, Problem>;

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(crate::body::full(
        serde_json::to_vec(value).expect("JSON serialises"),
    ));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn no_content() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

const REPR_DIGEST: &str = "repr-digest";
const WANT_REPR_DIGEST: &str = "want-repr-digest";

/// Answers `PUT`, `GET`, `HEAD` or `DELETE` of one file of `target`, with
/// the provider's answers noted for the problems it may end in.
pub async fn serve(
    host: Arc<dyn MetaHost>,
    target: &Target,
    raw_path: &str,
    req: Request<Body>,
) -> Answer {
    let path = ObjectPath::parse(raw_path)
        .map_err(|e| Problem::new(ErrorCode::InvalidPath, e.to_string()))?;
    if let Some(p) = &target.pacing {
        p.wait(&target.connection_id).await;
    }
    let answer = observed(async {
        match *req.method() {
            Method::PUT => put(&host, target, &path, req).await,
            Method::DELETE => delete(&host, target, &path, req).await,
            _ => get(&host, target, &path, req).await,
        }
    })
    .await;
    if let Err(p) = &answer
        && p.code == ErrorCode::ProviderRateLimited.as_str()
    {
        host.provider_rate_limited(&target.connection_id);
    }
    answer
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                Problem::new(
                    ErrorCode::InvalidDigest,
                    format!("'{name}' is not ASCII text"),
                )
            })
        })
        .transpose()
}

fn want_digest(headers: &HeaderMap) -> Result<Option<DigestAlgorithm>, Problem> {
    match header_str(headers, WANT_REPR_DIGEST)? {
        Some(v) => {
            parse_want_digest(v).map_err(|e| Problem::new(ErrorCode::InvalidDigest, e.to_string()))
        }
        None => Ok(None),
    }
}

fn not_found(path: &ObjectPath) -> Problem {
    Problem::new(ErrorCode::NotFound, format!("no file at '{path}'"))
}

fn precondition_failed() -> Problem {
    Problem::new(
        ErrorCode::PreconditionFailed,
        "the object's current entity tag does not satisfy the request's conditions",
    )
}

/// The JSON description of a file.
pub fn file_json(
    path: &str,
    size: u64,
    etag: &str,
    meta: Option<&ObjectMeta>,
    modified_ms: Option<i64>,
) -> serde_json::Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut v = json!({
        "path": path,
        "name": name,
        "type": "file",
        "size": size,
        "etag": etag,
        "modified_at": modified_ms,
    });
    if let Some(m) = meta {
        v["content_type"] = json!(m.content_type);
        v["checksums"] = json!({ "crc64nvme": encode_crc64(m.crc64nvme) });
        if let Some(sha) = &m.sha256 {
            v["checksums"]["sha256"] = json!(format_repr_digest(DigestAlgorithm::Sha256, sha));
        }
    }
    v
}

fn set(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn content_headers(headers: &mut HeaderMap, view: &ObjectView) {
    set(headers, header::ETAG, &view.etag);
    if let Some(crc) = view.crc64nvme() {
        set(headers, CRC64NVME_HEADER, &encode_crc64(crc));
    }
    if let Some(t) = view.modified {
        set(headers, header::LAST_MODIFIED, &t.format_http_date());
    }
}

async fn get(
    host: &Arc<dyn MetaHost>,
    t: &Target,
    path: &ObjectPath,
    req: Request<Body>,
) -> Answer {
    let want = want_digest(req.headers())?;
    let view = current(&**host, &t.op, &t.connection_id, path.as_str()).await?;
    let mut view = view.ok_or_else(|| not_found(path))?;
    let headers = req.headers();
    match conditional::evaluate(headers, req.method(), Some(&view.etag)) {
        Verdict::Failed => return Err(precondition_failed()),
        Verdict::NotModified => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            content_headers(resp.headers_mut(), &view);
            return Ok(resp);
        }
        Verdict::Proceed => {}
    }
    // Answer an impossible range before any digest work.
    let range = conditional::range(headers, view.size, &view.etag);
    if range == RangeRequest::Unsatisfiable {
        let mut p = Problem::new(
            ErrorCode::RangeNotSatisfiable,
            format!("the object has {} bytes", view.size),
        )
        .into_response();
        set(
            p.headers_mut(),
            header::CONTENT_RANGE,
            &format!("bytes */{}", view.size),
        );
        return Ok(p);
    }
    let repr_digest = match want {
        None => None,
        Some(alg) => {
            let stored = match (alg, &view.meta) {
                (DigestAlgorithm::Sha256, Some(m)) => m.sha256.clone(),
                _ => None,
            };
            let digest = match stored {
                Some(d) => d,
                None => compute_digest(host, t, path, &mut view, alg).await?,
            };
            Some(format_repr_digest(alg, &digest))
        }
    };

    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    content_headers(h, &view);
    set(h, header::ACCEPT_RANGES, "bytes");
    let content_type = view.meta.as_ref().and_then(|m| m.content_type.clone());
    set(
        h,
        header::CONTENT_TYPE,
        content_type
            .as_deref()
            .unwrap_or("application/octet-stream"),
    );
    if let Some(d) = &repr_digest {
        set(h, REPR_DIGEST, d);
    }
    for (name, value) in view.meta.iter().flat_map(|m| &m.headers) {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    }
    let (status, bytes) = match range {
        // (An unsatisfiable range was answered above.)
        RangeRequest::Full | RangeRequest::Unsatisfiable => (StatusCode::OK, 0..view.size),
        RangeRequest::Partial { start, end } => {
            set(
                h,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{}", view.size),
            );
            (StatusCode::PARTIAL_CONTENT, start..end + 1)
        }
    };
    *resp.status_mut() = status;
    let len = bytes.end - bytes.start;
    set(resp.headers_mut(), header::CONTENT_LENGTH, &len.to_string());
    if req.method() == Method::HEAD || len == 0 {
        return Ok(resp);
    }
    let stream = read_stream(&t.op, path.as_str(), bytes).await?;
    let info = DownloadInfo {
        account_id: &t.account_id,
        connection_id: &t.connection_id,
        path: path.as_str(),
        expected: len,
        provider: t.op.info().scheme(),
    };
    let stream = super::throttle::throttled(stream, t.throttle.down.clone());
    *resp.body_mut() = download_body(host.clone(), Box::pin(stream), info);
    Ok(resp)
}

/// Reads the whole object to compute a digest the client asked for and
/// ferry did not have. A SHA-256 is recorded, so it is computed once.
async fn compute_digest(
    host: &Arc<dyn MetaHost>,
    t: &Target,
    path: &ObjectPath,
    view: &mut ObjectView,
    alg: DigestAlgorithm,
) -> Result<Vec<u8>, Problem> {
    let sums = checksums_of(
        &t.op,
        path.as_str(),
        view.size,
        vec![alg],
        "reading the object to compute its digest",
    )
    .await?;
    let digest = sums.digest(alg).expect("the digest was asked for").to_vec();
    if alg == DigestAlgorithm::Sha256 && sums.len == view.size {
        let _guard = host.lock(&t.connection_id, path.as_str()).await;
        // Recorded for the version it was computed from only: a change
        // recorded meanwhile keeps its own record.
        let meta = ObjectMeta {
            generation: view.generation,
            connection_id: t.connection_id.clone(),
            path: path.as_str().to_owned(),
            size: view.size as i64,
            crc64nvme: sums.crc64nvme,
            sha256: Some(digest.clone()),
            content_type: view.meta.as_ref().and_then(|m| m.content_type.clone()),
            etag: view.etag.clone(),
            provider_modified_ms: view.modified_ms(),
            updated_at: now_ms(),
            headers: view
                .meta
                .as_ref()
                .map(|m| m.headers.clone())
                .unwrap_or_default(),
        };
        host.commit(Commit {
            upsert: Some(meta.clone()),
            ..Commit::default()
        })
        .await?;
        view.meta = Some(meta);
    }
    Ok(digest)
}

/// The longest last name an `fs` connection can write: the file is
/// written first under its name and a 37-character suffix in the staging
/// folder, and file systems take names of at most 255 bytes.
pub const FS_MAX_FILE_NAME: usize = 255 - 37;

/// Refuses, before anything is written, a file name an `fs` connection
/// could not stage.
/// Refuses a name too long for the staging folder of a folder connection
/// (its temporary file adds a suffix).
pub fn staged_name_fits(t: &Target, path: &ObjectPath) -> Result<(), Problem> {
    let name = path.as_str().rsplit('/').next().unwrap_or_default();
    if t.op.info().scheme() == "fs" && name.len() > FS_MAX_FILE_NAME {
        return Err(Problem::new(
            ErrorCode::InvalidPath,
            format!(
                "a folder connection takes file names of at most {FS_MAX_FILE_NAME} bytes; this one is {}",
                name.len()
            ),
        ));
    }
    Ok(())
}

async fn put(
    host: &Arc<dyn MetaHost>,
    t: &Target,
    path: &ObjectPath,
    req: Request<Body>,
) -> Answer {
    staged_name_fits(t, path)?;
    let headers = req.headers().clone();
    let kept = req
        .extensions()
        .get::<KeptHeaders>()
        .map(|k| k.0.clone())
        .unwrap_or_default();
    let expected = match header_str(&headers, REPR_DIGEST)? {
        Some(v) => parse_repr_digest(v)
            .map_err(|e| Problem::new(ErrorCode::InvalidDigest, e.to_string()))?,
        None => Vec::new(),
    };
    let expected_crc = match header_str(&headers, CRC64NVME_HEADER)? {
        Some(v) => Some(decode_crc64(v).ok_or_else(|| {
            Problem::new(
                ErrorCode::InvalidDigest,
                format!("'{CRC64NVME_HEADER}' must be the base64 of 8 bytes"),
            )
        })?),
        None => None,
    };
    let want = want_digest(&headers)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|s| s.len() <= 255)
                .ok_or_else(|| {
                    Problem::new(
                        ErrorCode::InvalidField,
                        "'Content-Type' must be ASCII text of at most 255 bytes",
                    )
                })?
                .to_owned(),
        ),
        None => None,
    };

    let before = current(&**host, &t.op, &t.connection_id, path.as_str()).await?;
    if conditional::evaluate(
        &headers,
        &Method::PUT,
        before.as_ref().map(|v| v.etag.as_str()),
    ) == Verdict::Failed
    {
        return Err(precondition_failed());
    }
    // The version this upload replaces, as it begins (ferry's record of
    // the path, even where the provider holds nothing); with conditions,
    // the version they are checked against again before the intent.
    let conditional = conditional::any(&headers);
    let began = match conditional {
        true => 0,
        false => replaced(&**host, &t.connection_id, path.as_str(), before.as_ref()).await?,
    };

    let mut digests: Vec<DigestAlgorithm> = expected.iter().map(|(a, _)| *a).collect();
    digests.extend(want);
    let started = Instant::now();
    let mut log = Transfer::start(
        &t.account_id,
        &t.connection_id,
        path.as_str(),
        Direction::Upload,
        host.via(),
    );
    let _active = super::Active::start(host.clone());
    let provider = t.op.info().scheme();
    let count = |n| host.count_bytes(Direction::Upload, provider, n);
    let body =
        super::throttle::throttled(BodyDataStream::new(req.into_body()), t.throttle.up.clone());
    let staged = stage(
        &t.op,
        path.as_str(),
        content_type.as_deref(),
        body,
        digests,
        &count,
    )
    .await;
    let mut staged = match staged {
        Ok(s) => s,
        Err(StageError::Source(e)) => {
            tracing::info!(error = %e, path = %path, "upload ended before its body was complete");
            log.duration_ms = started.elapsed().as_millis() as i64;
            host.transfer_ended(&log);
            host.log_transfer(log.clone()).await;
            return Err(Problem::new(
                ErrorCode::UploadIncomplete,
                "the request body ended early or could not be read",
            ));
        }
        Err(StageError::Provider(e)) => {
            log.duration_ms = started.elapsed().as_millis() as i64;
            host.transfer_ended(&log);
            return Err(provider_problem(&e, t.op.info().scheme(), "write"));
        }
        Err(StageError::TooLarge) => return Err(one_shot_too_large()),
    };
    let sums = staged.sums.clone();
    log.bytes = sums.len as i64;
    log.duration_ms = started.elapsed().as_millis() as i64;

    let mut mismatch = expected
        .iter()
        .find(|(alg, want)| sums.digest(*alg) != Some(want.as_slice()))
        .map(|(alg, want)| {
            format!(
                "the content's {} is {}, not the {} sent",
                alg.key(),
                format_repr_digest(*alg, sums.digest(*alg).unwrap_or_default()),
                format_repr_digest(*alg, want)
            )
        });
    if let Some(crc) = expected_crc
        && crc != sums.crc64nvme
    {
        mismatch.get_or_insert(format!(
            "the content's CRC64/NVME is {}, not the {} sent",
            encode_crc64(sums.crc64nvme),
            encode_crc64(crc)
        ));
    }
    if let Some(detail) = mismatch {
        if let Err(e) = staged.writer.abort().await {
            tracing::warn!(error = %e, "could not discard a rejected upload");
        }
        log.status = TransferStatus::Rejected;
        host.transfer_ended(&log);
        host.log_transfer(log.clone()).await;
        return Err(Problem::new(ErrorCode::DigestMismatch, detail));
    }

    // Commit: one writer at a time per path, preconditions checked again
    // against what is there now. The change replaces the version the
    // upload began with (or, with conditions, the one they held for): if
    // another change was recorded since, the store refuses the intent.
    let _guard = host.lock(&t.connection_id, path.as_str()).await;
    let mut seen = before;
    let mut replaces = began;
    if conditional {
        let now = async {
            let now = current(&**host, &t.op, &t.connection_id, path.as_str()).await?;
            let g = replaced(&**host, &t.connection_id, path.as_str(), now.as_ref()).await?;
            Ok::<_, Problem>((now, g))
        };
        match now.await {
            Ok((now, g)) => (seen, replaces) = (now, g),
            Err(p) => {
                let _ = staged.writer.abort().await;
                return Err(p);
            }
        }
        if conditional::evaluate(
            &headers,
            &Method::PUT,
            seen.as_ref().map(|v| v.etag.as_str()),
        ) == Verdict::Failed
        {
            let _ = staged.writer.abort().await;
            return Err(precondition_failed());
        }
    }
    let existing = seen.is_some();
    // What will be recorded, known before the content is put in place, so
    // that a host keeping intents can record it first.
    let mut meta = ObjectMeta {
        connection_id: t.connection_id.clone(),
        path: path.as_str().to_owned(),
        size: sums.len as i64,
        crc64nvme: sums.crc64nvme,
        sha256: sums.digest(DigestAlgorithm::Sha256).map(<[u8]>::to_vec),
        content_type,
        etag: etag_for(sums.crc64nvme, sums.len),
        provider_modified_ms: None,
        updated_at: now_ms(),
        headers: kept,
        generation: 0,
    };
    let kind = if existing {
        EventKind::Updated
    } else {
        EventKind::Created
    };
    let event = EventRecord {
        account_id: t.account_id.clone(),
        connection_id: t.connection_id.clone(),
        kind,
        path: path.as_str().to_owned(),
        from_path: None,
        size: Some(meta.size),
        at: meta.updated_at,
        origin: Origin::Ferry,
    };
    let mut change = Commit {
        upsert: Some(meta.clone()),
        event: Some(event),
        ..Commit::default()
    };
    let intent = Intent {
        connection_id: t.connection_id.clone(),
        path: path.as_str().to_owned(),
        expect: Some((sums.len, sums.crc64nvme)),
        also_absent: None,
        replaces,
        source: None,
        conditional,
        change: change.clone(),
    };
    change.intent = match host.intend(&intent).await {
        Ok(id) => id,
        Err(p) => {
            let _ = staged.writer.abort().await;
            return Err(p);
        }
    };
    // Given up if this ends before the commit: the provider failed, or
    // the request was dropped midway.
    let claim = Claimed::new(&**host, change.intent.clone());
    if let Err(e) = staged.writer.close().await {
        return Err(provider_problem(&e, t.op.info().scheme(), "write"));
    }
    meta.provider_modified_ms = match t.op.stat(path.as_str()).await {
        Ok(m) => m.last_modified().map(|t| t.into_inner().as_millisecond()),
        Err(_) => None,
    };
    let modified_ms = meta.provider_modified_ms;
    log.status = TransferStatus::Complete;
    log.crc64nvme = Some(sums.crc64nvme);
    host.transfer_ended(&log);
    change.upsert = Some(meta.clone());
    change.transfer = Some(log);
    host.commit(change).await?;
    claim.done();

    let status = if existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = json(
        status,
        &file_json(
            path.as_str(),
            sums.len,
            &meta.etag,
            Some(&meta),
            modified_ms,
        ),
    );
    let h = resp.headers_mut();
    set(h, header::ETAG, &meta.etag);
    set(h, CRC64NVME_HEADER, &encode_crc64(sums.crc64nvme));
    let shown: Vec<String> = sums
        .digests
        .iter()
        .map(|(alg, d)| format_repr_digest(*alg, d))
        .collect();
    if !shown.is_empty() {
        set(h, REPR_DIGEST, &shown.join(", "));
    }
    Ok(resp)
}

async fn delete(
    host: &Arc<dyn MetaHost>,
    t: &Target,
    path: &ObjectPath,
    req: Request<Body>,
) -> Answer {
    let _guard = host.lock(&t.connection_id, path.as_str()).await;
    let view = current(&**host, &t.op, &t.connection_id, path.as_str()).await?;
    let view = view.ok_or_else(|| not_found(path))?;
    if conditional::evaluate(req.headers(), &Method::DELETE, Some(&view.etag)) == Verdict::Failed {
        return Err(precondition_failed());
    }
    let event = EventRecord {
        account_id: t.account_id.clone(),
        connection_id: t.connection_id.clone(),
        kind: EventKind::Deleted,
        path: path.as_str().to_owned(),
        from_path: None,
        size: Some(view.size as i64),
        at: now_ms(),
        origin: Origin::Ferry,
    };
    let mut change = Commit {
        remove: vec![(t.connection_id.clone(), path.as_str().to_owned())],
        event: Some(event),
        ..Commit::default()
    };
    let intent = Intent {
        connection_id: t.connection_id.clone(),
        path: path.as_str().to_owned(),
        expect: None,
        also_absent: None,
        replaces: view.generation,
        source: None,
        conditional: conditional::any(req.headers()),
        change: change.clone(),
    };
    change.intent = host.intend(&intent).await?;
    let claim = Claimed::new(&**host, change.intent.clone());
    if let Err(e) = t.op.delete(path.as_str()).await {
        return Err(provider_problem(&e, t.op.info().scheme(), "delete"));
    }
    host.commit(change).await?;
    claim.done();
    Ok(no_content())
}

/// The answer to an upload larger than a one-request provider takes.
pub fn one_shot_too_large() -> Problem {
    Problem::new(
        ErrorCode::BodyTooLarge,
        format!(
            "this connection's provider takes an upload in one request, which ferry holds in memory: at most {} bytes",
            super::transfer::ONE_SHOT_MAX_BYTES
        ),
    )
}
