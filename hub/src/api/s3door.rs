//! The S3 door on the hub: requests signed with an S3 key (SigV4) are
//! answered as S3 answers them, over the account's connections as buckets.
//!
//! s3s parses the S3 REST API and checks signatures (with the secret of
//! the key, opened from the store); each operation is then served by the
//! same content path as ferry's own API (`files::serve` with the hub as
//! the metadata host), so an object written through S3 has its metadata,
//! checksum and event as any upload, and the other way round. A request is
//! S3's when it carries an S3 signature: an `Authorization` header of
//! `AWS4-HMAC-SHA256` (or SigV2's `AWS `, refused), or a presigned URL's
//! `X-Amz-Signature` / `Signature` query member; ferry's own API never
//! takes those, so both share the API's listener.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{self, StreamingBlob, Timestamp};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use ferry_common::body::{Body, BoxError};
use ferry_common::content::Target;
use ferry_common::path::STAGING_DIR;
use ferry_common::problem::Problem;
use ferry_common::provider::s3_parts;
use ferry_common::uploads::protocol;

use super::content_host::HubHost;
use super::operators::operator_for;
use super::{AppState, VIA_HUB};
use crate::store::{ConnectionRow, S3Key};

/// Whether `req` is signed as S3 requests are.
pub fn speaks_s3(req: &Request<Body>) -> bool {
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

/// Who signed `req`, for read-your-writes: a digest of the access key id
/// its SigV4 credential names (every request's signature differs, so the
/// whole header cannot stand for the client as an API key's does).
pub fn principal(req: &Request<Body>) -> Option<String> {
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
    (!access_key.is_empty())
        .then(|| ferry_common::principal::of(format!("s3:{access_key}").as_bytes()))
}

/// Whether `req` is signed with SigV2, which ferry does not take: an
/// `Authorization: AWS …` header, or a presigned URL's `Signature` without
/// SigV4's `X-Amz-Signature`.
fn signed_v2(req: &Request<Body>) -> bool {
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

/// S3's answer to a request signed with SigV2.
fn refuse_v2() -> Response<Body> {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<Error><Code>InvalidRequest</Code><Message>The authorization mechanism you have provided is not supported. \
Please use AWS4-HMAC-SHA256.</Message></Error>";
    let mut resp = Response::new(ferry_common::body::full(xml));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// The S3 service of one hub.
pub struct Door {
    service: s3s::service::S3Service,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Door")
    }
}

impl Door {
    /// The door over `state`'s accounts.
    pub fn new(state: Arc<AppState>) -> Self {
        // The key the signature was checked with, for the operation: the
        // service lives for one request, so one lookup serves both.
        let signer = Arc::new(std::sync::Mutex::new(None));
        let mut builder = s3s::service::S3ServiceBuilder::new(FerryS3 {
            state: state.clone(),
            signer: signer.clone(),
        });
        builder.set_auth(Keys { state, signer });
        Self {
            service: builder.build(),
        }
    }

    /// Answers one S3 request.
    pub async fn serve(&self, req: Request<Body>) -> Response<Body> {
        if signed_v2(&req) {
            return refuse_v2();
        }
        let req = req.map(s3s::Body::http_body_unsync);
        match self.service.call(req).await {
            Ok(resp) => resp.map(ferry_common::body::boxed),
            Err(e) => {
                tracing::warn!(error = ?e, "the S3 door could not answer");
                let mut resp = Response::new(ferry_common::body::empty());
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                resp
            }
        }
    }
}

/// Finds the secret of a request's key: sealed in the store, opened with
/// the master key.
struct Keys {
    state: Arc<AppState>,
    /// Where the key found is left for [`FerryS3::key_of`].
    signer: Signer,
}

/// The key of the request the door is serving, once its signature is
/// being checked.
type Signer = Arc<std::sync::Mutex<Option<S3Key>>>;

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let found = self
            .state
            .store
            .s3_key(access_key)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?;
        let Some((key, sealed)) = found else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        *self.signer.lock().expect("poisoned") = Some(key);
        let secret = self.state.master_key.open(&sealed, access_key).map_err(|e| {
            tracing::error!(s3_key.id = %access_key, error = %e, "an S3 key's secret does not open");
            s3_error!(InternalError)
        })?;
        String::from_utf8(secret)
            .map(SecretKey::from)
            .map_err(|_| s3_error!(InternalError))
    }
}

/// The account's connections as buckets, their files as objects.
struct FerryS3 {
    state: Arc<AppState>,
    /// The key [`Keys`] found for this request.
    signer: Signer,
}

/// One page of a listing.
struct Page {
    contents: Vec<dto::Object>,
    prefixes: Vec<dto::CommonPrefix>,
    /// The last key, when more follow.
    next: Option<String>,
    count: i32,
    max_keys: i32,
    delimiter: Option<String>,
}

/// What an S3 operation does to its bucket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

impl FerryS3 {
    /// The key that signed `req` (s3s checked the signature).
    async fn key_of<T>(&self, req: &S3Request<T>) -> S3Result<S3Key> {
        let Some(cred) = &req.credentials else {
            return Err(s3_error!(AccessDenied, "sign the request with an S3 key"));
        };
        let checked = self.signer.lock().expect("poisoned").clone();
        if let Some(key) = checked.filter(|k| k.access_key_id == cred.access_key) {
            return Ok(key);
        }
        match self.state.store.s3_key(&cred.access_key).await {
            Ok(Some((key, _))) => Ok(key),
            Ok(None) => Err(s3_error!(InvalidAccessKeyId)),
            Err(e) => Err(s3_error!(e, ServiceUnavailable)),
        }
    }

    /// The connection `bucket` of the key's account, if the key may use it
    /// for `access`. A bucket that is not the account's, and one the key
    /// may not use, are told apart only as S3 does: `NoSuchBucket` for the
    /// first, `AccessDenied` for the second (the account's own).
    async fn bucket(&self, key: &S3Key, bucket: &str, access: Access) -> S3Result<ConnectionRow> {
        let row = self
            .state
            .store
            .get_connection(&key.account_id, bucket)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?
            .filter(|row| row.name == bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        if key
            .connections
            .as_ref()
            .is_some_and(|ids| !ids.contains(&row.id))
            || (access == Access::Write && key.read_only)
        {
            return Err(s3_error!(AccessDenied));
        }
        Ok(row)
    }

    async fn target(&self, key: &S3Key, row: &ConnectionRow) -> S3Result<Target> {
        let op = operator_for(&self.state, row)
            .await
            .map_err(problem_error)?;
        Ok(Target {
            account_id: key.account_id.clone(),
            connection_id: row.id.clone(),
            op,
            multipart: None,
        })
    }

    /// Serves `method` on the object `object` of `bucket` through ferry's
    /// content path, with the S3 request's conditional and range fields.
    async fn file(
        &self,
        key: &S3Key,
        bucket: &str,
        object: &str,
        method: Method,
        headers: &HeaderMap,
        body: Body,
    ) -> S3Result<Response<Body>> {
        let access = if method == Method::PUT || method == Method::DELETE {
            Access::Write
        } else {
            Access::Read
        };
        let row = self.bucket(key, bucket, access).await?;
        let target = self.target(key, &row).await?;
        let mut req = Request::builder()
            .method(method)
            .uri("/")
            .body(body)
            .map_err(|_| s3_error!(InvalidRequest))?;
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
        let host = Arc::new(HubHost::new(self.state.clone(), VIA_HUB));
        let resp = ferry_common::content::files::serve(host, &target, object, req)
            .await
            .map_err(problem_error)?;
        Ok(resp)
    }

    /// One page of the objects of `bucket` under `prefix` whose keys sort
    /// after `after`: with the `/` delimiter one folder's files and its
    /// subfolders as common prefixes, without one every file below.
    async fn list(
        &self,
        key: &S3Key,
        bucket: &str,
        prefix: &str,
        delimiter: Option<String>,
        after: &str,
        max_keys: Option<i32>,
    ) -> S3Result<Page> {
        let row = self.bucket(key, bucket, Access::Read).await?;
        let target = self.target(key, &row).await?;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        if delimiter.as_deref().is_some_and(|d| d != "/") {
            return Err(s3_error!(
                NotImplemented,
                "only '/' is taken as a delimiter"
            ));
        }
        let max = max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        // The folder the prefix is in: names in it must start with the rest.
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let list_at = if dir.is_empty() {
            "/".to_owned()
        } else {
            format!("{dir}/")
        };
        let lister = target
            .op
            .list_with(&list_at)
            .recursive(delimiter.is_none())
            .await;
        let entries = match lister {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(problem_error(ferry_common::provider::problem(
                    &e,
                    &row.provider,
                    "list",
                )));
            }
        };
        let mut items: Vec<(String, Option<dto::Object>)> = entries
            .into_iter()
            .filter(|e| {
                let p = e.path();
                p != list_at
                    && !p.starts_with(STAGING_DIR)
                    && p.starts_with(prefix)
                    && (delimiter.is_some() || !e.metadata().is_dir())
            })
            .map(|e| {
                let meta = e.metadata();
                let object = (!meta.is_dir()).then(|| dto::Object {
                    key: Some(e.path().to_owned()),
                    size: Some(meta.content_length() as i64),
                    last_modified: meta
                        .last_modified()
                        .map(|t| Timestamp::from(std::time::SystemTime::from(t))),
                    ..Default::default()
                });
                (e.path().to_owned(), object)
            })
            .filter(|(name, _)| name.as_str() > after)
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let truncated = items.len() > max;
        items.truncate(max);
        let next = truncated
            .then(|| items.last().map(|i| i.0.clone()))
            .flatten();
        let count = items.len() as i32;
        let (mut contents, mut prefixes) = (Vec::new(), Vec::new());
        for (name, object) in items {
            match object {
                Some(o) => contents.push(o),
                None => prefixes.push(dto::CommonPrefix { prefix: Some(name) }),
            }
        }
        Ok(Page {
            contents,
            prefixes,
            next,
            count,
            max_keys: max as i32,
            delimiter,
        })
    }

    /// A tus creation (a multipart upload's part, or its completion) in
    /// `row`, for the object at `path` when it names one.
    async fn tus_create(
        &self,
        key: &S3Key,
        row: &ConnectionRow,
        path: Option<&str>,
        req: Request<Body>,
    ) -> S3Result<Response<Body>> {
        let host = super::uploads::host(&self.state, key.account_id.clone(), &req);
        let resp = ferry_common::uploads::serve::create(host, &row.name, path, req)
            .await
            .map_err(|_| s3_error!(InternalError))?;
        if resp.status() == StatusCode::CREATED {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let problem: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let detail = problem
            .as_ref()
            .and_then(|p| p["detail"].as_str())
            .unwrap_or("the upload was refused")
            .to_owned();
        let code = match (
            status.as_u16(),
            problem.as_ref().and_then(|p| p["code"].as_str()),
        ) {
            (413, _) => S3ErrorCode::EntityTooLarge,
            (460, _) | (_, Some("checksum_mismatch")) => S3ErrorCode::BadDigest,
            (_, Some("invalid_field")) => S3ErrorCode::InvalidPart,
            (_, Some("invalid_path")) => S3ErrorCode::InvalidArgument,
            (s, _) if (500..600).contains(&s) => S3ErrorCode::InternalError,
            _ => S3ErrorCode::InvalidRequest,
        };
        Err(S3Error::with_message(code, detail))
    }

    /// A `GET` or `HEAD` of an object; a condition that says it has not
    /// changed is S3's `304`.
    async fn read(
        &self,
        key: &S3Key,
        bucket: &str,
        object: &str,
        method: Method,
        headers: &HeaderMap,
    ) -> S3Result<Response<Body>> {
        let empty = ferry_common::body::empty();
        let resp = self
            .file(key, bucket, object, method, headers, empty)
            .await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Err(not_modified());
        }
        Ok(resp)
    }
}

/// A multipart upload's id: random, with the object's media type
/// (base64url), which the completion gives the object. The upload itself
/// is its parts, tus partial uploads named by their ETags.
fn multipart_id(content_type: Option<&str>) -> String {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}",
        b64.encode(bytes),
        b64.encode(content_type.unwrap_or_default())
    )
}

/// The media type a multipart upload's id carries, if any.
fn multipart_content_type(id: &str) -> Option<String> {
    use base64::Engine as _;
    let (_, ct) = id.split_once('.')?;
    let ct = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(ct)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())?;
    (!ct.is_empty() && ct.len() <= 255 && ct.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .then_some(ct)
}

/// The upload id a tus creation's `Location` names.
fn location_id(resp: &Response<Body>) -> Option<String> {
    header_str(resp, header::LOCATION)?
        .rsplit_once("/v1/uploads/")
        .map(|(_, id)| id.to_owned())
}

/// The S3 error for a ferry problem: its code mapped, its text kept.
fn problem_error(p: Problem) -> S3Error {
    let code = match p.code {
        "file_not_found" | "not_found" | "not_a_file" => S3ErrorCode::NoSuchKey,
        "precondition_failed" => S3ErrorCode::PreconditionFailed,
        "range_not_satisfiable" => S3ErrorCode::InvalidRange,
        "invalid_path" => S3ErrorCode::InvalidArgument,
        "digest_mismatch" | "checksum_mismatch" => S3ErrorCode::BadDigest,
        "store_unavailable" | "provider_unavailable" | "provider_rate_limited" => {
            S3ErrorCode::ServiceUnavailable
        }
        _ if (400..500).contains(&p.status) => S3ErrorCode::InvalidRequest,
        _ => S3ErrorCode::InternalError,
    };
    let mut e = S3Error::with_message(code, p.detail.unwrap_or_else(|| p.title.to_owned()));
    if let Ok(status) = StatusCode::from_u16(p.status) {
        e.set_status_code(status);
    }
    e
}

/// A ferry error answer that is not an error in S3's words: `304` and
/// `412` from a conditional request.
fn not_modified() -> S3Error {
    let mut e = S3Error::new(S3ErrorCode::Custom("NotModified".into()));
    e.set_status_code(StatusCode::NOT_MODIFIED);
    e
}

fn header_str(resp: &Response<Body>, name: header::HeaderName) -> Option<&str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn etag(resp: &Response<Body>) -> Option<dto::ETag> {
    header_str(resp, header::ETAG).and_then(|v| v.parse().ok())
}

fn last_modified(resp: &Response<Body>) -> Option<Timestamp> {
    let text = header_str(resp, header::LAST_MODIFIED)?;
    Timestamp::parse(dto::TimestampFormat::HttpDate, text).ok()
}

fn content_length(resp: &Response<Body>) -> Option<i64> {
    header_str(resp, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// A body s3s hands over, as ferry's body type.
fn ferry_body(blob: Option<StreamingBlob>) -> Body {
    match blob {
        None => ferry_common::body::empty(),
        Some(blob) => {
            let frames = blob.map(|chunk| {
                chunk
                    .map(http_body::Frame::data)
                    .map_err(|e| -> BoxError { e })
            });
            http_body_util::StreamBody::new(frames).boxed_unsync()
        }
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
            let mut body = self.0.lock().expect("poisoned");
            loop {
                return match std::pin::Pin::new(&mut *body).poll_frame(cx) {
                    std::task::Poll::Pending => std::task::Poll::Pending,
                    std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
                    std::task::Poll::Ready(Some(Err(e))) => {
                        std::task::Poll::Ready(Some(Err(std::io::Error::other(e))))
                    }
                    std::task::Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => std::task::Poll::Ready(Some(Ok(data))),
                        // Trailers: nothing of the object's.
                        Err(_) => continue,
                    },
                };
            }
        }
    }
    StreamingBlob::wrap(Shared(std::sync::Mutex::new(body)))
}

#[async_trait::async_trait]
impl S3 for FerryS3 {
    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let key = self.key_of(&req).await?;
        let rows = self
            .state
            .store
            .list_connections(&key.account_id)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?;
        let buckets = rows
            .into_iter()
            .filter(|r| {
                key.connections
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&r.id))
            })
            .map(|r| dto::Bucket {
                name: Some(r.name),
                creation_date: Some(Timestamp::from(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.created_at as u64),
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        let key = self.key_of(&req).await?;
        self.bucket(&key, &req.input.bucket, Access::Read).await?;
        Ok(S3Response::new(dto::HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        let key = self.key_of(&req).await?;
        self.bucket(&key, &req.input.bucket, Access::Read).await?;
        Ok(S3Response::new(dto::GetBucketLocationOutput::default()))
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let key = self.key_of(&req).await?;
        let input = &req.input;
        let resp = self
            .read(&key, &input.bucket, &input.key, Method::HEAD, &req.headers)
            .await?;
        Ok(S3Response::new(dto::HeadObjectOutput {
            content_length: content_length(&resp),
            content_type: header_str(&resp, header::CONTENT_TYPE).map(str::to_owned),
            e_tag: etag(&resp),
            last_modified: last_modified(&resp),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let key = self.key_of(&req).await?;
        let input = &req.input;
        let resp = self
            .read(&key, &input.bucket, &input.key, Method::GET, &req.headers)
            .await?;
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        let output = dto::GetObjectOutput {
            content_length: content_length(&resp),
            content_type: header_str(&resp, header::CONTENT_TYPE).map(str::to_owned),
            content_range: header_str(&resp, header::CONTENT_RANGE).map(str::to_owned),
            e_tag: etag(&resp),
            last_modified: last_modified(&resp),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        };
        let mut output = output;
        output.body = Some(blob(resp.into_body()));
        let mut answer = S3Response::new(output);
        if partial {
            answer.status = Some(StatusCode::PARTIAL_CONTENT);
        }
        Ok(answer)
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let key = self.key_of(&req).await?;
        let mut headers = HeaderMap::new();
        if let Some(ct) = &req.input.content_type
            && let Ok(v) = ct.parse()
        {
            headers.insert(header::CONTENT_TYPE, v);
        }
        if let Some(n) = req.input.content_length {
            headers.insert(header::CONTENT_LENGTH, n.into());
        }
        let dto::PutObjectInput {
            bucket,
            key: object,
            body,
            ..
        } = req.input;
        let resp = self
            .file(
                &key,
                &bucket,
                &object,
                Method::PUT,
                &headers,
                ferry_body(body),
            )
            .await?;
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: etag(&resp),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let key = self.key_of(&req).await?;
        let done = self
            .file(
                &key,
                &req.input.bucket,
                &req.input.key,
                Method::DELETE,
                &HeaderMap::new(),
                ferry_common::body::empty(),
            )
            .await;
        match done {
            // Deleting what is not there succeeds in S3.
            Ok(_) => {}
            Err(e) if *e.code() == S3ErrorCode::NoSuchKey => {}
            Err(e) => return Err(e),
        }
        Ok(S3Response::new(dto::DeleteObjectOutput::default()))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        self.bucket(&key, &input.bucket, Access::Write).await?;
        ferry_common::path::ObjectPath::parse(&input.key)
            .map_err(|e| s3_error!(InvalidArgument, "{e}"))?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(multipart_id(input.content_type.as_deref())),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let row = self.bucket(&key, &input.bucket, Access::Write).await?;
        let len = input
            .content_length
            .ok_or_else(|| s3_error!(MissingContentLength))?;
        if !(1..=i64::from(s3_parts::MAX_PARTS)).contains(&i64::from(input.part_number)) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"));
        }
        // A part is a tus partial upload of its own: its id is its ETag,
        // which the client gives back to complete the upload.
        let req = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header("tus-resumable", "1.0.0")
            .header("upload-concat", "partial")
            .header("upload-length", len)
            .header(header::CONTENT_LENGTH, len)
            .header(header::CONTENT_TYPE, protocol::TUS_APPEND_TYPE)
            .body(ferry_body(input.body))
            .map_err(|_| s3_error!(InvalidRequest))?;
        let resp = self.tus_create(&key, &row, None, req).await?;
        let id = location_id(&resp).ok_or_else(|| s3_error!(InternalError))?;
        Ok(S3Response::new(dto::UploadPartOutput {
            e_tag: Some(dto::ETag::Strong(id)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let row = self.bucket(&key, &input.bucket, Access::Write).await?;
        let parts: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let number = p.part_number.ok_or_else(|| s3_error!(InvalidPart))?;
                let id = p
                    .e_tag
                    .map(|e| e.value().to_owned())
                    .filter(|id| id.starts_with("upl_"))
                    .ok_or_else(|| s3_error!(InvalidPart))?;
                Ok((number, id))
            })
            .collect::<S3Result<_>>()?;
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "name the parts to join"));
        }
        if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(s3_error!(InvalidPartOrder));
        }
        // S3's smallest part, but for the last: a client relying on that
        // check is told here, as S3 would tell it.
        for (_, id) in &parts[..parts.len() - 1] {
            let part = self
                .state
                .store
                .get_upload(&key.account_id, id)
                .await
                .map_err(|e| s3_error!(e, ServiceUnavailable))?
                .ok_or_else(|| s3_error!(InvalidPart))?;
            if part.offset < s3_parts::MIN_PART {
                return Err(s3_error!(EntityTooSmall));
            }
        }
        let concat = parts
            .iter()
            .map(|(_, id)| format!("/v1/uploads/{id}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header("tus-resumable", "1.0.0")
            .header("upload-concat", format!("final;{concat}"));
        if let Some(ct) = multipart_content_type(&input.upload_id) {
            use base64::Engine as _;
            let value = base64::engine::general_purpose::STANDARD.encode(ct);
            builder = builder.header("upload-metadata", format!("filetype {value}"));
        }
        let req = builder
            .body(ferry_common::body::empty())
            .map_err(|_| s3_error!(InvalidRequest))?;
        self.tus_create(&key, &row, Some(&input.key), req).await?;
        let head = self
            .read(
                &key,
                &input.bucket,
                &input.key,
                Method::HEAD,
                &HeaderMap::new(),
            )
            .await?;
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: etag(&head),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        // The parts sent are partial uploads no final one joins: the sweep
        // removes them once their time runs out (`uploads.expiry_secs`).
        let key = self.key_of(&req).await?;
        self.bucket(&key, &req.input.bucket, Access::Write).await?;
        Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        self.bucket(&key, &input.bucket, Access::Write).await?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys a request"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for object in input.delete.objects {
            let done = self
                .file(
                    &key,
                    &input.bucket,
                    &object.key,
                    Method::DELETE,
                    &HeaderMap::new(),
                    ferry_common::body::empty(),
                )
                .await;
            match done {
                Ok(_) => {}
                Err(e) if *e.code() == S3ErrorCode::NoSuchKey => {}
                Err(e) => {
                    errors.push(dto::Error {
                        code: Some(e.code().as_str().to_owned()),
                        key: Some(object.key),
                        message: e.message().map(str::to_owned),
                        ..Default::default()
                    });
                    continue;
                }
            }
            if !quiet {
                deleted.push(dto::DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                });
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let dto::CopySource::Bucket {
            bucket: from_bucket,
            key: from_key,
            version_id: None,
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copies name a bucket and a key"));
        };
        if **from_bucket != *input.bucket {
            return Err(s3_error!(
                NotImplemented,
                "copies are within one bucket (one connection)"
            ));
        }
        // The source is read, the target written: the key must be allowed
        // both.
        self.bucket(&key, from_bucket, Access::Read).await?;
        let row = self.bucket(&key, &input.bucket, Access::Write).await?;
        let target = self.target(&key, &row).await?;
        let res = super::connections::Resolved {
            account: key.account_id.clone(),
            row,
            op: target.op,
        };
        super::tree::relocate(&self.state, &res, from_key, &input.key, true, false)
            .await
            .map_err(problem_error)?;
        let head = self
            .read(
                &key,
                &input.bucket,
                &input.key,
                Method::HEAD,
                &HeaderMap::new(),
            )
            .await?;
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: etag(&head),
                last_modified: last_modified(&head),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let after = input
            .continuation_token
            .clone()
            .or(input.start_after.clone())
            .unwrap_or_default();
        let prefix = input.prefix.clone().unwrap_or_default();
        let page = self
            .list(
                &key,
                &input.bucket,
                &prefix,
                input.delimiter.clone(),
                &after,
                input.max_keys,
            )
            .await?;
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(prefix),
            delimiter: page.delimiter,
            max_keys: Some(page.max_keys),
            key_count: Some(page.count),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next,
            contents: Some(page.contents),
            common_prefixes: Some(page.prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let after = input.marker.clone().unwrap_or_default();
        let prefix = input.prefix.clone().unwrap_or_default();
        let page = self
            .list(
                &key,
                &input.bucket,
                &prefix,
                input.delimiter.clone(),
                &after,
                input.max_keys,
            )
            .await?;
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(prefix),
            delimiter: page.delimiter,
            max_keys: Some(page.max_keys),
            marker: input.marker,
            is_truncated: Some(page.next.is_some()),
            next_marker: page.next,
            contents: Some(page.contents),
            common_prefixes: Some(page.prefixes),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, authorization: Option<&str>) -> Request<Body> {
        let mut b = Request::builder().uri(uri);
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(ferry_common::body::empty()).unwrap()
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
        assert_eq!(principal(&signed), principal(&presigned));
        assert!(principal(&signed).is_some());
        assert_ne!(principal(&signed), principal(&other));
    }
}
