//! The S3 door's pieces every node shares: telling an S3 request apart,
//! and the object operations whose bytes stream where the request
//! arrives — `GetObject`, `HeadObject`, `PutObject` and `UploadPart` —
//! served by ferry's own content and upload code over a [`MetaHost`] or
//! [`UploadHost`], so the hub and a spoke answer them alike.
//!
//! A request is S3's when it carries an S3 signature: an `Authorization`
//! header of `AWS4-HMAC-SHA256` (or SigV2's `AWS `, refused), or a
//! presigned URL's `X-Amz-Signature` / `Signature` query member; ferry's
//! own API never takes those, so both share the API's listener.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use s3s::dto::{self, StreamingBlob, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use crate::body::{Body, BoxError};
use crate::content::model::KeptHeaders;
use crate::content::{MetaHost, Target};
use crate::problem::Problem;
use crate::provider::s3_parts;
use crate::uploads::{S3PartOf, UploadHost, protocol};

/// Whether `req` is signed as S3 requests are.
pub fn speaks_s3<B>(req: &Request<B>) -> bool {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if auth.starts_with(b"AWS4-HMAC-SHA256 ") || auth.starts_with(b"AWS ") {
        return true;
    }
    req.uri().query().is_some_and(|q| {
        q.split('&').any(|p| {
            let name = p.split('=').next().unwrap_or_default();
            name.eq_ignore_ascii_case("X-Amz-Signature") || name == "Signature"
        })
    })
}

/// The principal of an S3 access key, for read-your-writes: every
/// request's signature differs, so the key stands for the client.
pub fn key_principal(access_key: &str) -> String {
    crate::principal::of(format!("s3:{access_key}").as_bytes())
}

/// Who signed `req`, for read-your-writes: the principal of the access key
/// its SigV4 credential names.
pub fn principal<B>(req: &Request<B>) -> Option<String> {
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .map(str::to_owned);
    let from_query = || {
        req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|p| p.strip_prefix("X-Amz-Credential="))
                .map(|c| c.replace("%2F", "/").replace("%2f", "/"))
        })
    };
    let credential = from_header.or_else(from_query)?;
    let access_key = credential.split('/').next()?.trim();
    (!access_key.is_empty()).then(|| key_principal(access_key))
}

/// Whether `req` is signed with SigV2, which ferry does not take: an
/// `Authorization: AWS …` header, or a presigned URL's `Signature` without
/// SigV4's `X-Amz-Signature`.
pub fn signed_v2<B>(req: &Request<B>) -> bool {
    let header_v2 = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"AWS "));
    let query_v2 = req.uri().query().is_some_and(|q| {
        let names: Vec<&str> = q
            .split('&')
            .map(|p| p.split('=').next().unwrap_or_default())
            .collect();
        names.contains(&"Signature")
            && !names
                .iter()
                .any(|n| n.eq_ignore_ascii_case("X-Amz-Signature"))
    });
    header_v2 || query_v2
}

/// Whether `req` is a presigned URL valid for longer than SigV4 allows
/// (a week), or for no time at all.
fn presigned_too_long<B>(req: &Request<B>) -> bool {
    req.uri().query().is_some_and(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("X-Amz-Expires="))
            .is_some_and(|v| !v.parse::<u64>().is_ok_and(|n| (1..=604_800).contains(&n)))
    })
}

/// S3's answer to a request signed with SigV2.
fn refuse_v2() -> Response<Body> {
    error_answer(&s3_error!(
        InvalidRequest,
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
    ))
}

/// An S3 error as an answer of S3's, for what is answered before (or
/// without) an s3s service: its status, and its code and message in XML.
pub fn error_answer(e: &S3Error) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
        e.code().as_str(),
        quick_xml::escape::escape(e.message().unwrap_or_default())
    );
    let mut resp = Response::new(crate::body::full(xml));
    *resp.status_mut() = e.status_code().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// The largest XML body the door reads whole (`CompleteMultipartUpload`
/// naming 10,000 parts, `DeleteObjects` naming 1,000 keys of 1,024 bytes).
pub const MAX_XML_BODY: usize = 2 * 1024 * 1024;

/// S3's largest part.
pub const MAX_PART: i64 = 5 << 30;

/// The host names of the S3 door (`api.s3_domains`): a request to
/// `<bucket>.<domain>` names its bucket in its host (virtual-host style);
/// one to `<domain>` itself, or to any other name or an address, in its
/// path (path style).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts(Vec<String>);

impl Hosts {
    /// The door's domains, in lower case.
    pub fn new(domains: &[String]) -> Self {
        Self(domains.iter().map(|d| d.to_ascii_lowercase()).collect())
    }

    /// Whether any domain is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bucket a request to `host` (a `Host` field, perhaps with a port)
    /// names, if it is virtual-host style.
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = without_port(host);
        self.0.iter().find_map(|d| {
            let prefix = name.len().checked_sub(d.len() + 1)?;
            (name.is_char_boundary(prefix)
                && name[prefix..].starts_with('.')
                && name[prefix + 1..].eq_ignore_ascii_case(d))
            .then(|| &name[..prefix])
            .filter(|b| !b.is_empty())
        })
    }

    /// Sets up an s3s service being built: the domains (none: every
    /// request is path style), and the door's limits ([`MAX_XML_BODY`]).
    pub fn apply(&self, builder: &mut s3s::service::S3ServiceBuilder) {
        if !self.is_empty() {
            builder.set_host(self.clone());
        }
        let mut config = s3s::config::S3Config::default();
        config.xml_max_body_size = MAX_XML_BODY;
        builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            config,
        ))));
    }
}

/// `host` without a trailing `:port` (an IPv6 address keeps its brackets).
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !name.ends_with(':') =>
        {
            name
        }
        _ => host,
    }
}

/// Whether `name` is a DNS name the door may take as a domain.
pub fn valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl s3s::host::S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let vh = s3s::host::VirtualHost::new(without_port(host));
        Ok(match self.bucket_of(host) {
            Some(bucket) => vh.with_bucket(bucket),
            None => vh,
        })
    }
}

/// The operation an s3s service took a request for, once its signature
/// held (an access check that records it, and asks for a signature as
/// s3s's own does), for the metrics.
#[derive(Debug, Clone, Default)]
pub struct OperationSeen(Arc<std::sync::Mutex<Option<String>>>);

impl OperationSeen {
    /// The operation's S3 name (`GetObject`…), or `none` when the request
    /// was refused before one was known (its signature, its form).
    pub fn name(&self) -> String {
        self.0
            .lock()
            .expect("poisoned")
            .clone()
            .unwrap_or_else(|| "none".to_owned())
    }
}

#[async_trait::async_trait]
impl s3s::access::S3Access for OperationSeen {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        *self.0.lock().expect("poisoned") = Some(cx.s3_op().name().to_owned());
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3_error!(AccessDenied, "Signature is required")),
        }
    }
}

/// The S3 door's metrics, the same on the hub and on spokes: requests by
/// operation and status.
#[derive(Debug, Clone)]
pub struct S3Metrics {
    requests: prometheus_client::metrics::family::Family<
        S3RequestLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct S3RequestLabels {
    operation: String,
    status: u16,
}

impl S3Metrics {
    /// Registers `s3_requests` in `registry`.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let requests = prometheus_client::metrics::family::Family::default();
        registry.register(
            "s3_requests",
            "Requests the S3 door answered here, by S3 operation (none: refused before one was known) and status",
            requests.clone(),
        );
        Self { requests }
    }

    /// Counts one request.
    pub fn request(&self, operation: String, status: u16) {
        self.requests
            .get_or_create(&S3RequestLabels { operation, status })
            .inc();
    }
}

/// Runs `req` through an s3s service and hands its answer back as ferry's.
pub async fn call(service: &s3s::service::S3Service, req: Request<Body>) -> Response<Body> {
    let resp = answer(service, req).await;
    with_request_id(resp).await
}

/// The largest error answer given its request id (S3's are a few hundred
/// bytes).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// `resp` with the request's id, as S3 gives it: in `x-amz-request-id`,
/// and in an error's XML (`<RequestId>`).
async fn with_request_id(resp: Response<Body>) -> Response<Body> {
    let Some(id) = crate::request_id::current() else {
        return resp;
    };
    let Ok(value) = http::HeaderValue::from_str(&id) else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert("x-amz-request-id", value);
    let xml = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().ends_with(b"xml"));
    let small = http_body::Body::size_hint(&body)
        .upper()
        .is_some_and(|n| n <= MAX_ERROR_BODY as u64);
    if !(parts.status.is_client_error() || parts.status.is_server_error()) || !xml || !small {
        return Response::from_parts(parts, body);
    }
    let Ok(collected) = body.collect().await else {
        return Response::from_parts(parts, crate::body::empty());
    };
    let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    let text = match text.rfind("</Error>") {
        Some(at) if !text.contains("<RequestId>") => {
            format!("{}<RequestId>{id}</RequestId>{}", &text[..at], &text[at..])
        }
        _ => text,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, crate::body::full(text))
}

/// [`call`]'s answer, before its request id.
async fn answer(service: &s3s::service::S3Service, req: Request<Body>) -> Response<Body> {
    if signed_v2(&req) {
        return refuse_v2();
    }
    if presigned_too_long(&req) {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("AuthorizationQueryParametersError".into()),
            "X-Amz-Expires must be between 1 and 604800 seconds (a week).",
        );
        e.set_status_code(StatusCode::BAD_REQUEST);
        return error_answer(&e);
    }
    let req = req.map(s3s::Body::http_body_unsync);
    match service.call(req).await {
        Ok(resp) => resp.map(crate::body::boxed),
        Err(e) => {
            tracing::warn!(error = ?e, "the S3 door could not answer");
            let mut resp = Response::new(crate::body::empty());
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// The S3 error for a ferry problem: its code mapped, its text kept.
pub fn problem_error(p: Problem) -> S3Error {
    let code = match p.code {
        "file_not_found" | "not_found" | "not_a_file" => S3ErrorCode::NoSuchKey,
        "precondition_failed" => S3ErrorCode::PreconditionFailed,
        // What S3 answers when a conflicting write to the key came first.
        "write_conflict" => S3ErrorCode::Custom("ConditionalRequestConflict".into()),
        "range_not_satisfiable" => S3ErrorCode::InvalidRange,
        "invalid_path" => S3ErrorCode::InvalidArgument,
        "digest_mismatch" | "checksum_mismatch" => S3ErrorCode::BadDigest,
        "upload_too_large" => S3ErrorCode::EntityTooLarge,
        "unauthorized" | "grant_refused" => S3ErrorCode::AccessDenied,
        "connection_not_found" => S3ErrorCode::NoSuchBucket,
        // Beyond the account's requests per second: what S3 answers, which
        // the SDKs retry later.
        "rate_limited" => S3ErrorCode::SlowDown,
        // No retry soon helps; the status (507, 429) stays ferry's.
        "storage_quota_exceeded" | "egress_quota_exceeded" => {
            S3ErrorCode::Custom("QuotaExceeded".into())
        }
        "store_unavailable"
        | "provider_unavailable"
        | "provider_rate_limited"
        | "hub_unreachable" => S3ErrorCode::ServiceUnavailable,
        _ if (400..500).contains(&p.status) => S3ErrorCode::InvalidRequest,
        _ => S3ErrorCode::InternalError,
    };
    let mut e = S3Error::with_message(code, p.detail.unwrap_or_else(|| p.title.to_owned()));
    if let Ok(status) = StatusCode::from_u16(p.status) {
        e.set_status_code(status);
    }
    e
}

/// A ferry answer that is no error in S3's words: `304` from a
/// conditional request.
fn not_modified() -> S3Error {
    let mut e = S3Error::new(S3ErrorCode::Custom("NotModified".into()));
    e.set_status_code(StatusCode::NOT_MODIFIED);
    e
}

/// A header field of `resp` as text.
pub fn header_str(resp: &Response<Body>, name: header::HeaderName) -> Option<&str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The entity tag of a ferry answer.
pub fn etag(resp: &Response<Body>) -> Option<dto::ETag> {
    header_str(resp, header::ETAG).and_then(|v| v.parse().ok())
}

/// The modification time of a ferry answer.
pub fn last_modified(resp: &Response<Body>) -> Option<Timestamp> {
    let text = header_str(resp, header::LAST_MODIFIED)?;
    Timestamp::parse(dto::TimestampFormat::HttpDate, text).ok()
}

fn content_length(resp: &Response<Body>) -> Option<i64> {
    header_str(resp, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// A checksum algorithm S3 clients send a body's value of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
    Md5,
}

impl Algo {
    const ALL: [Algo; 6] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
        Self::Md5,
    ];

    /// The header (or trailer) field that carries the value.
    fn field(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
            Self::Md5 => "content-md5",
        }
    }

    /// The value's length in bytes.
    fn len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Md5 => 16,
        }
    }

    fn hasher(self) -> Hasher {
        use s3s::crypto::Checksum as _;
        match self {
            Self::Crc32 => Hasher::Crc32(s3s::crypto::Crc32::new()),
            Self::Crc32c => Hasher::Crc32c(s3s::crypto::Crc32c::new()),
            Self::Crc64Nvme => Hasher::Crc64Nvme(s3s::crypto::Crc64Nvme::new()),
            Self::Sha1 => Hasher::Sha1(s3s::crypto::Sha1::new()),
            Self::Sha256 => Hasher::Sha256(s3s::crypto::Sha256::new()),
            Self::Md5 => Hasher::Md5(s3s::crypto::Md5::new()),
        }
    }
}

enum Hasher {
    Crc32(s3s::crypto::Crc32),
    Crc32c(s3s::crypto::Crc32c),
    Crc64Nvme(s3s::crypto::Crc64Nvme),
    Sha1(s3s::crypto::Sha1),
    Sha256(s3s::crypto::Sha256),
    Md5(s3s::crypto::Md5),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        use s3s::crypto::Checksum as _;
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(h) => h.update(data),
            Self::Crc64Nvme(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Md5(h) => h.update(data),
        }
    }

    fn finalize(self) -> Vec<u8> {
        use s3s::crypto::Checksum as _;
        match self {
            Self::Crc32(h) => h.finalize().to_vec(),
            Self::Crc32c(h) => h.finalize().to_vec(),
            Self::Crc64Nvme(h) => h.finalize().to_vec(),
            Self::Sha1(h) => h.finalize().as_ref().to_vec(),
            Self::Sha256(h) => h.finalize().as_ref().to_vec(),
            Self::Md5(h) => h.finalize().to_vec(),
        }
    }
}

/// What an S3 request says its body hashes to: values in its header
/// fields (`x-amz-checksum-*`, `Content-MD5`), and one announced in
/// `x-amz-trailer` to follow the body (recent SDKs send a CRC so).
pub struct BodyChecks {
    in_head: Vec<(Algo, Vec<u8>)>,
    trailer: Option<(Algo, s3s::TrailingHeaders)>,
}

impl std::fmt::Debug for BodyChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_head: Vec<Algo> = self.in_head.iter().map(|(a, _)| *a).collect();
        f.debug_struct("BodyChecks")
            .field("in_head", &in_head)
            .field("trailer", &self.trailer.as_ref().map(|(a, _)| *a))
            .finish()
    }
}

impl BodyChecks {
    /// The checks of a request with `headers` and, for an `aws-chunked`
    /// body, its `trailers`; a malformed value is refused at once.
    pub fn of(headers: &HeaderMap, trailers: Option<s3s::TrailingHeaders>) -> S3Result<Self> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut in_head = Vec::new();
        for algo in Algo::ALL {
            let Some(v) = headers.get(algo.field()) else {
                continue;
            };
            let value = v
                .to_str()
                .ok()
                .and_then(|v| b64.decode(v.trim()).ok())
                .filter(|v| v.len() == algo.len());
            match value {
                Some(value) => in_head.push((algo, value)),
                None if algo == Algo::Md5 => return Err(s3_error!(InvalidDigest)),
                None => {
                    return Err(s3_error!(
                        InvalidRequest,
                        "Value for {} header is invalid.",
                        algo.field()
                    ));
                }
            }
        }
        let announced = headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        let trailer = match announced {
            None => None,
            Some(name) => {
                let algo = Algo::ALL
                    .into_iter()
                    .find(|a| *a != Algo::Md5 && a.field() == name)
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidRequest,
                            "the trailer {name} is not a checksum S3 knows"
                        )
                    })?;
                let trailers = trailers.ok_or_else(|| {
                    s3_error!(
                        InvalidRequest,
                        "a trailer comes only after an aws-chunked body"
                    )
                })?;
                Some((algo, trailers))
            }
        };
        Ok(Self { in_head, trailer })
    }
}

/// What a checked body found: the first fault, in S3's words, which the
/// operation answers with in place of the content path's own.
#[derive(Debug, Clone, Default)]
pub struct BodyFault(Arc<std::sync::Mutex<Option<S3Error>>>);

impl BodyFault {
    fn set(&self, e: S3Error) {
        let mut slot = self.0.lock().expect("poisoned");
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// `e`, or the body's fault if it had one.
    pub fn or(&self, e: S3Error) -> S3Error {
        self.0.lock().expect("poisoned").take().unwrap_or(e)
    }
}

/// The S3 error for a body s3s could not read: a chunk signature or the
/// signed payload hash that does not hold, a malformed chunk.
fn body_error(e: &(dyn std::error::Error + Send + Sync)) -> S3Error {
    let text = e.to_string();
    if text.contains("SignatureMismatch") {
        s3_error!(SignatureDoesNotMatch, "a chunk's signature does not match")
    } else if text.contains("Sha256Mismatch") {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            "the body's SHA-256 is not the one signed",
        );
        e.set_status_code(StatusCode::BAD_REQUEST);
        e
    } else if text.contains("FormatError") || text.contains("Incomplete") {
        s3_error!(IncompleteBody, "the body ended early or is malformed")
    } else {
        s3_error!(IncompleteBody, "the body could not be read")
    }
}

/// `blob` as ferry's body type, checked as it streams against `checks`:
/// at its end, a value that does not match is an error in place of the
/// end, so the content path writes nothing; what went wrong is left in
/// `fault`.
pub fn checked_body(blob: Option<StreamingBlob>, checks: BodyChecks, fault: &BodyFault) -> Body {
    let Some(blob) = blob else {
        return crate::body::empty();
    };
    let mut hashers: Vec<(Algo, Hasher)> = checks
        .in_head
        .iter()
        .map(|(a, _)| (*a, a.hasher()))
        .collect();
    if let Some((algo, _)) = &checks.trailer
        && !hashers.iter().any(|(a, _)| a == algo)
    {
        hashers.push((*algo, algo.hasher()));
    }
    let state = Checking {
        blob,
        hashers,
        checks,
        fault: fault.clone(),
        done: false,
    };
    let frames = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.blob.next().await {
            Some(Ok(data)) => {
                for (_, h) in &mut st.hashers {
                    h.update(&data);
                }
                Some((Ok(http_body::Frame::data(data)), st))
            }
            Some(Err(e)) => {
                st.fault.set(body_error(&*e));
                st.done = true;
                Some((Err(e), st))
            }
            None => {
                st.done = true;
                match st.verdict() {
                    Ok(()) => None,
                    Err(e) => {
                        let text = e.message().unwrap_or("BadDigest").to_owned();
                        st.fault.set(e);
                        Some((Err(BoxError::from(text)), st))
                    }
                }
            }
        }
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

struct Checking {
    blob: StreamingBlob,
    hashers: Vec<(Algo, Hasher)>,
    checks: BodyChecks,
    fault: BodyFault,
    done: bool,
}

impl Checking {
    /// Whether the body hashed to every value the request gave.
    fn verdict(&mut self) -> S3Result<()> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let sums: Vec<(Algo, Vec<u8>)> = std::mem::take(&mut self.hashers)
            .into_iter()
            .map(|(a, h)| (a, h.finalize()))
            .collect();
        let sum = |algo: Algo| sums.iter().find(|(a, _)| *a == algo).map(|(_, s)| s);
        let mut expected = self.checks.in_head.clone();
        if let Some((algo, trailers)) = &self.checks.trailer {
            let value = trailers
                .read(|h| {
                    h.get(algo.field())
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
                .flatten()
                .and_then(|v| b64.decode(v.trim()).ok())
                .filter(|v| v.len() == algo.len())
                .ok_or_else(|| {
                    s3_error!(
                        InvalidRequest,
                        "the trailer {} is missing or malformed",
                        algo.field()
                    )
                })?;
            expected.push((*algo, value));
        }
        for (algo, want) in expected {
            if sum(algo) != Some(&want) {
                return Err(match algo {
                    Algo::Md5 => s3_error!(
                        BadDigest,
                        "the Content-MD5 you specified did not match what was received"
                    ),
                    _ => s3_error!(
                        BadDigest,
                        "the {} you specified did not match the calculated checksum",
                        algo.field()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A ferry body as the object body s3s sends (which must be `Sync`: the
/// body sits behind a lock only its one reader takes).
fn blob(body: Body) -> StreamingBlob {
    struct Shared(std::sync::Mutex<Body>);
    impl futures_util::Stream for Shared {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            use http_body::Body as _;
            use std::task::Poll;
            let mut body = self.0.lock().expect("poisoned");
            loop {
                return match std::pin::Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => Poll::Ready(Some(Ok(data))),
                        // Trailers: nothing of the object's.
                        Err(_) => continue,
                    },
                };
            }
        }
    }
    StreamingBlob::wrap(Shared(std::sync::Mutex::new(body)))
}

/// The representation fields S3 keeps with an object and sends back.
const KEPT: [&str; 5] = [
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
];

/// S3's limit on an object's user metadata (`x-amz-meta-*`, names and
/// values), in bytes.
const MAX_USER_METADATA: usize = 2048;

/// The header fields of a write that its object keeps: `x-amz-meta-*`
/// and [`KEPT`]'s (`aws-chunked`, the body's transfer coding, is no
/// content coding of the object's).
pub fn kept_headers(headers: &HeaderMap) -> S3Result<Vec<(String, String)>> {
    let mut kept = Vec::new();
    let mut user = 0;
    for (name, value) in headers {
        let name = name.as_str();
        let meta = name.starts_with("x-amz-meta-");
        if !meta && !KEPT.contains(&name) {
            continue;
        }
        let value = value
            .to_str()
            .map_err(|_| s3_error!(InvalidArgument, "{name} must be ASCII text"))?;
        let value = if name == "content-encoding" {
            let codings: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
                .collect();
            if codings.is_empty() {
                continue;
            }
            codings.join(", ")
        } else {
            value.to_owned()
        };
        if meta {
            user += name.len() - "x-amz-meta-".len() + value.len();
        }
        kept.push((name.to_owned(), value));
    }
    if user > MAX_USER_METADATA {
        return Err(s3_error!(
            MetadataTooLarge,
            "user metadata is at most {MAX_USER_METADATA} bytes"
        ));
    }
    Ok(kept)
}

/// Serves `method` on `object` of `target` through ferry's content path,
/// with the S3 request's conditional, range and content fields.
pub async fn file(
    host: Arc<dyn MetaHost>,
    target: &Target,
    object: &str,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> S3Result<Response<Body>> {
    file_keeping(host, target, object, method, headers, body, Vec::new()).await
}

/// [`file`], a write keeping the header fields `kept` with its object.
pub async fn file_keeping(
    host: Arc<dyn MetaHost>,
    target: &Target,
    object: &str,
    method: Method,
    headers: &HeaderMap,
    body: Body,
    kept: Vec<(String, String)>,
) -> S3Result<Response<Body>> {
    let mut req = Request::builder()
        .method(method)
        .uri("/")
        .body(body)
        .map_err(|_| s3_error!(InvalidRequest))?;
    if !kept.is_empty() {
        req.extensions_mut().insert(KeptHeaders(kept));
    }
    for name in [
        header::RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
    ] {
        if let Some(v) = headers.get(&name) {
            req.headers_mut().insert(name, v.clone());
        }
    }
    crate::content::files::serve(host, target, object, req)
        .await
        .map_err(problem_error)
}

/// A `GET` or `HEAD` of an object; a condition that says it has not
/// changed is S3's `304`.
pub async fn read(
    host: Arc<dyn MetaHost>,
    target: &Target,
    object: &str,
    method: Method,
    headers: &HeaderMap,
) -> S3Result<Response<Body>> {
    let resp = file(host, target, object, method, headers, crate::body::empty()).await?;
    if resp.status() == StatusCode::NOT_MODIFIED {
        return Err(not_modified());
    }
    Ok(resp)
}

/// `HeadObject`.
pub async fn head_object(
    host: Arc<dyn MetaHost>,
    target: &Target,
    object: &str,
    headers: &HeaderMap,
) -> S3Result<S3Response<dto::HeadObjectOutput>> {
    let resp = read(host, target, object, Method::HEAD, headers).await?;
    let kept = Representation::of(&resp);
    let crc = whole_crc(&resp, headers);
    Ok(S3Response::new(dto::HeadObjectOutput {
        checksum_type: crc.as_ref().map(|_| full_object()),
        checksum_crc64nvme: crc,
        content_length: content_length(&resp),
        content_type: header_str(&resp, header::CONTENT_TYPE).map(str::to_owned),
        e_tag: etag(&resp),
        last_modified: last_modified(&resp),
        accept_ranges: Some("bytes".into()),
        metadata: kept.metadata,
        content_encoding: kept.content_encoding,
        content_disposition: kept.content_disposition,
        content_language: kept.content_language,
        cache_control: kept.cache_control,
        expires: kept.expires,
        ..Default::default()
    }))
}

/// The object's CRC64/NVME, in S3's field (the base64 of its eight bytes,
/// as ferry sends it), when the client asked for checksums
/// (`x-amz-checksum-mode: ENABLED`) and the answer is the whole object
/// with a CRC ferry recorded.
fn whole_crc(resp: &Response<Body>, asked: &HeaderMap) -> Option<String> {
    let wanted = asked
        .get("x-amz-checksum-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"enabled"));
    (wanted && resp.status() != StatusCode::PARTIAL_CONTENT)
        .then(|| {
            header_str(
                resp,
                header::HeaderName::from_static(crate::checksum::CRC64NVME_HEADER),
            )
        })
        .flatten()
        .map(str::to_owned)
}

fn full_object() -> dto::ChecksumType {
    dto::ChecksumType::from_static(dto::ChecksumType::FULL_OBJECT)
}

/// What a ferry answer says of an object's representation, in S3's
/// fields.
#[derive(Default)]
struct Representation {
    metadata: Option<dto::Metadata>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
}

impl Representation {
    fn of(resp: &Response<Body>) -> Self {
        let text = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let metadata: dto::Metadata = resp
            .headers()
            .iter()
            .filter_map(|(n, v)| {
                let key = n.as_str().strip_prefix("x-amz-meta-")?;
                Some((key.to_owned(), v.to_str().ok()?.to_owned()))
            })
            .collect();
        Self {
            metadata: (!metadata.is_empty()).then_some(metadata),
            content_encoding: text("content-encoding"),
            content_disposition: text("content-disposition"),
            content_language: text("content-language"),
            cache_control: text("cache-control"),
            expires: text("expires")
                .and_then(|t| Timestamp::parse(dto::TimestampFormat::HttpDate, &t).ok()),
        }
    }
}

/// `GetObject`, ranges and conditions as ferry's `GET`, the
/// representation fields as kept or as the `response-*` parameters say.
pub async fn get_object(
    host: Arc<dyn MetaHost>,
    target: &Target,
    req: &S3Request<dto::GetObjectInput>,
) -> S3Result<S3Response<dto::GetObjectOutput>> {
    let input = &req.input;
    let resp = read(host, target, &input.key, Method::GET, &req.headers).await?;
    let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
    let kept = Representation::of(&resp);
    let crc = whole_crc(&resp, &req.headers);
    let mut output = dto::GetObjectOutput {
        checksum_type: crc.as_ref().map(|_| full_object()),
        checksum_crc64nvme: crc,
        content_length: content_length(&resp),
        content_type: input
            .response_content_type
            .clone()
            .or_else(|| header_str(&resp, header::CONTENT_TYPE).map(str::to_owned)),
        content_range: header_str(&resp, header::CONTENT_RANGE).map(str::to_owned),
        e_tag: etag(&resp),
        last_modified: last_modified(&resp),
        accept_ranges: Some("bytes".into()),
        metadata: kept.metadata,
        content_encoding: input
            .response_content_encoding
            .clone()
            .or(kept.content_encoding),
        content_disposition: input
            .response_content_disposition
            .clone()
            .or(kept.content_disposition),
        content_language: input
            .response_content_language
            .clone()
            .or(kept.content_language),
        cache_control: input.response_cache_control.clone().or(kept.cache_control),
        expires: input.response_expires.clone().or(kept.expires),
        ..Default::default()
    };
    output.body = Some(blob(resp.into_body()));
    let mut answer = S3Response::new(output);
    if partial {
        answer.status = Some(StatusCode::PARTIAL_CONTENT);
    }
    Ok(answer)
}

/// `PutObject`: a `PUT` of the file, with its media type, its body
/// checked against the checksums the request gives as it streams.
pub async fn put_object(
    host: Arc<dyn MetaHost>,
    target: &Target,
    req: S3Request<dto::PutObjectInput>,
) -> S3Result<S3Response<dto::PutObjectOutput>> {
    let checks = BodyChecks::of(&req.headers, req.trailing_headers)?;
    let kept = kept_headers(&req.headers)?;
    let input = req.input;
    let fault = BodyFault::default();
    let mut headers = HeaderMap::new();
    if let Some(ct) = &input.content_type
        && let Ok(v) = ct.parse()
    {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(n) = input.content_length {
        headers.insert(header::CONTENT_LENGTH, n.into());
    }
    let resp = file_keeping(
        host,
        target,
        &input.key,
        Method::PUT,
        &headers,
        checked_body(input.body, checks, &fault),
        kept,
    )
    .await
    .map_err(|e| fault.or(e))?;
    let crc = header_str(
        &resp,
        header::HeaderName::from_static(crate::checksum::CRC64NVME_HEADER),
    )
    .map(str::to_owned);
    Ok(S3Response::new(dto::PutObjectOutput {
        checksum_type: crc.as_ref().map(|_| full_object()),
        checksum_crc64nvme: crc,
        e_tag: etag(&resp),
        ..Default::default()
    }))
}

/// A tus creation (a multipart upload's part, or its completion) in
/// `connection`, for the object at `path` when it names one; a refusal in
/// S3's words.
pub async fn tus_create(
    host: Arc<dyn UploadHost>,
    connection: &str,
    path: Option<&str>,
    req: Request<Body>,
) -> S3Result<Response<Body>> {
    let resp = crate::uploads::serve::create(host, connection, path, req)
        .await
        .map_err(|_| s3_error!(ServiceUnavailable, "this node cannot reach the provider"))?;
    if resp.status() == StatusCode::CREATED {
        return Ok(resp);
    }
    let p = answer_problem(resp).await;
    let code = match (p.status, p.code) {
        (413, _) => S3ErrorCode::EntityTooLarge,
        (460, _) | (_, "checksum_mismatch") => S3ErrorCode::BadDigest,
        (_, "invalid_field") => S3ErrorCode::InvalidPart,
        (_, "invalid_path") => S3ErrorCode::InvalidArgument,
        (_, "upload_not_found") => S3ErrorCode::NoSuchUpload,
        (_, "write_conflict") => S3ErrorCode::Custom("ConditionalRequestConflict".into()),
        (_, "storage_quota_exceeded") => S3ErrorCode::Custom("QuotaExceeded".into()),
        (_, "rate_limited") => S3ErrorCode::SlowDown,
        (401 | 403, _) => S3ErrorCode::AccessDenied,
        (s, _) if (500..600).contains(&s) => S3ErrorCode::InternalError,
        _ => S3ErrorCode::InvalidRequest,
    };
    let detail = p
        .detail
        .unwrap_or_else(|| "the upload was refused".to_owned());
    let mut e = S3Error::with_message(code, detail);
    if matches!(
        p.code,
        "write_conflict" | "storage_quota_exceeded" | "rate_limited"
    ) && let Ok(status) = StatusCode::from_u16(p.status)
    {
        // ferry's status: 409, 507, 429.
        e.set_status_code(status);
    }
    Err(e)
}

/// The problem a ferry answer that is no success carries (its body read
/// whole: a problem is small).
pub async fn answer_problem(resp: Response<Body>) -> Problem {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Problem::from_answer(status, &body)
}

/// The upload id a tus creation's `Location` names.
pub fn location_id(resp: &Response<Body>) -> Option<String> {
    header_str(resp, header::LOCATION)?
        .rsplit_once("/v1/uploads/")
        .map(|(_, id)| id.to_owned())
}

/// A part of the S3 multipart upload `part_of`, `len` bytes of `body`, as
/// a tus partial upload of its own in `connection`: its id, which is the
/// part's ETag.
pub async fn tus_part(
    host: Arc<dyn UploadHost>,
    connection: &str,
    part_of: S3PartOf,
    len: i64,
    body: Body,
) -> S3Result<String> {
    if !(1..=s3_parts::MAX_PARTS).contains(&part_of.number) {
        return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"));
    }
    if len > MAX_PART {
        return Err(s3_error!(EntityTooLarge, "a part is at most 5 GiB"));
    }
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/")
        .header("tus-resumable", "1.0.0")
        .header("upload-concat", "partial")
        .header("upload-length", len)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, protocol::TUS_APPEND_TYPE)
        .body(body)
        .map_err(|_| s3_error!(InvalidRequest))?;
    req.extensions_mut().insert(part_of);
    let resp = tus_create(host, connection, None, req).await?;
    location_id(&resp).ok_or_else(|| s3_error!(InternalError))
}

/// `UploadPart`: the part becomes a tus partial upload of its own in
/// `connection`, its bytes sent to the provider where the request arrived
/// and checked as they stream; its id is the part's ETag, which the client
/// gives back to complete the upload.
pub async fn upload_part(
    host: Arc<dyn UploadHost>,
    connection: &str,
    req: S3Request<dto::UploadPartInput>,
) -> S3Result<S3Response<dto::UploadPartOutput>> {
    let checks = BodyChecks::of(&req.headers, req.trailing_headers)?;
    let input = req.input;
    let fault = BodyFault::default();
    let len = input
        .content_length
        .ok_or_else(|| s3_error!(MissingContentLength))?;
    let part_of = S3PartOf {
        upload: input.upload_id,
        number: u32::try_from(input.part_number)
            .map_err(|_| s3_error!(InvalidArgument, "part numbers are 1 to 10000"))?,
    };
    let body = checked_body(input.body, checks, &fault);
    let id = tus_part(host, connection, part_of, len, body)
        .await
        .map_err(|e| fault.or(e))?;
    Ok(S3Response::new(dto::UploadPartOutput {
        e_tag: Some(dto::ETag::Strong(id)),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, authorization: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn virtual_host_style_names_the_bucket_in_the_host_only_under_a_domain() {
        let hosts = Hosts::new(&["s3.example.com".into(), "S3.Other.Net".into()]);
        assert_eq!(hosts.bucket_of("photos.s3.example.com"), Some("photos"));
        assert_eq!(
            hosts.bucket_of("photos.s3.example.com:8443"),
            Some("photos")
        );
        assert_eq!(hosts.bucket_of("a.b.s3.other.net"), Some("a.b"));
        assert_eq!(hosts.bucket_of("s3.example.com"), None);
        assert_eq!(hosts.bucket_of(".s3.example.com"), None);
        assert_eq!(hosts.bucket_of("xs3.example.com"), None);
        assert_eq!(hosts.bucket_of("127.0.0.1:8443"), None);
        assert_eq!(hosts.bucket_of("[::1]:8443"), None);
        assert_eq!(hosts.bucket_of("hub.example.com"), None);
        assert_eq!(Hosts::default().bucket_of("a.s3.example.com"), None);
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert!(valid_domain("s3.example.com") && valid_domain("localhost"));
        for bad in ["", "a..b", "-a.b", "a_b.c", "s3.example.com:80", "a.b."] {
            assert!(!valid_domain(bad), "{bad}");
        }
    }

    #[test]
    fn s3_requests_are_told_by_their_signature_and_their_key_is_the_principal() {
        let signed = request(
            "/local/a.txt",
            Some(
                "AWS4-HMAC-SHA256 Credential=FRYAAAAAAAAAAAAAAAAA/20261206/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        let presigned = request(
            "/local/a.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=FRYAAAAAAAAAAAAAAAAA%2F20261206%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00",
            None,
        );
        let other = request(
            "/local/a.txt",
            Some(
                "AWS4-HMAC-SHA256 Credential=FRYBBBBBBBBBBBBBBBBB/20261206/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        assert!(speaks_s3(&signed) && speaks_s3(&presigned));
        assert!(!speaks_s3(&request(
            "/v1/connections",
            Some("Bearer fry_x")
        )));
        assert!(signed_v2(&request("/local/a", Some("AWS FRY:sig"))));
        assert!(signed_v2(&request(
            "/local/a?AWSAccessKeyId=FRY&Signature=x&Expires=1",
            None
        )));
        assert!(!signed_v2(&presigned));
        for (expires, refused) in [
            ("1", false),
            ("604800", false),
            ("604801", true),
            ("0", true),
            ("x", true),
        ] {
            let uri = format!("/b/k?X-Amz-Signature=00&X-Amz-Expires={expires}");
            assert_eq!(
                presigned_too_long(&request(&uri, None)),
                refused,
                "{expires}"
            );
        }
        assert_eq!(principal(&signed), principal(&presigned));
        assert_eq!(
            principal(&signed).as_deref(),
            Some(key_principal("FRYAAAAAAAAAAAAAAAAA").as_str())
        );
        assert_ne!(principal(&signed), principal(&other));
    }
}
