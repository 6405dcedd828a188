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
//!
//! At a spoke, object operations whose bytes are large (`GetObject`,
//! `HeadObject`, `PutObject`, `UploadPart`) are served there: the spoke
//! sends their head here first ([`authorize`]), and streams them with the
//! provider itself under the pass it gets back. Everything else the spoke
//! forwards, and this door answers it.

use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{self, Timestamp};
use s3s::{S3, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use ferry_common::body::Body;
use ferry_common::content::Target;
use ferry_common::contract::{S3AuthorizeRequest, S3Authorized, S3Serve};
use ferry_common::path::STAGING_DIR;
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::provider::s3_parts;
use ferry_common::s3_door::{self as door, etag, last_modified, problem_error};
pub use ferry_common::s3_door::{principal, speaks_s3};

use super::content_host::HubHost;
use super::http_util::{json, read_json};
use super::operators::operator_for;
use super::{ApiResult, AppState, VIA_HUB};
use crate::grant::PassClaims;
use crate::limits::Use;
use crate::store::{ConnectionRow, MultipartPart, MultipartUpload, S3Key, now_ms};

/// The S3 service of one hub.
pub struct Door {
    service: s3s::service::S3Service,
    operation: door::OperationSeen,
    state: Arc<AppState>,
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
        state.s3_hosts.apply(&mut builder);
        let operation = door::OperationSeen::default();
        builder.set_access(operation.clone());
        builder.set_auth(Keys {
            state: state.clone(),
            signer,
        });
        Self {
            service: builder.build(),
            operation,
            state,
        }
    }

    /// Answers one S3 request.
    pub async fn serve(&self, req: Request<Body>) -> Response<Body> {
        let resp = door::call(&self.service, req).await;
        self.state
            .metrics
            .s3
            .request(self.operation.name(), resp.status().as_u16());
        resp
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
        let key = match checked.filter(|k| k.access_key_id == cred.access_key) {
            Some(key) => key,
            None => match self.state.store.s3_key(&cred.access_key).await {
                Ok(Some((key, _))) => key,
                Ok(None) => return Err(s3_error!(InvalidAccessKeyId)),
                Err(e) => return Err(s3_error!(e, ServiceUnavailable)),
            },
        };
        // The account's request: counted in its usage and held to its
        // requests per second, as its API requests are.
        super::auth::note_account(&key.account_id);
        crate::limits::check_request_rate(&self.state, &key.account_id)
            .await
            .map_err(problem_error)?;
        Ok(key)
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
            throttle: Default::default(),
            pacing: Some(self.state.pacing.clone()),
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
        let (target, host) = self.object_target(key, bucket, access).await?;
        door::file(host, &target, object, method, headers, body).await
    }

    /// The target and content host of `bucket`'s objects.
    async fn object_target(
        &self,
        key: &S3Key,
        bucket: &str,
        access: Access,
    ) -> S3Result<(Target, Arc<dyn ferry_common::content::MetaHost>)> {
        let row = self.bucket(key, bucket, access).await?;
        let target = self.target(key, &row).await?;
        Ok((target, Arc::new(HubHost::new(self.state.clone(), VIA_HUB))))
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
        door::tus_create(host, &row.name, path, req).await
    }

    /// A `GET` or `HEAD` of an object.
    async fn read(
        &self,
        key: &S3Key,
        bucket: &str,
        object: &str,
        method: Method,
        headers: &HeaderMap,
    ) -> S3Result<Response<Body>> {
        let (target, host) = self.object_target(key, bucket, Access::Read).await?;
        door::read(host, &target, object, method, headers).await
    }
}

/// A copy's `x-amz-copy-source-if-*` as the conditional fields of a read
/// of its source.
fn copy_conditions(
    if_match: Option<&dto::ETagCondition>,
    if_none_match: Option<&dto::ETagCondition>,
    modified_since: Option<&Timestamp>,
    unmodified_since: Option<&Timestamp>,
) -> S3Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    let etag = |c: &dto::ETagCondition| match c {
        dto::ETagCondition::ETag(e) => format!("\"{}\"", e.value()),
        dto::ETagCondition::Any => "*".to_owned(),
    };
    let date = |t: &Timestamp| {
        let mut out = Vec::new();
        t.format(dto::TimestampFormat::HttpDate, &mut out)
            .ok()
            .map(|()| String::from_utf8_lossy(&out).into_owned())
    };
    let fields = [
        (http::header::IF_MATCH, if_match.map(etag)),
        (http::header::IF_NONE_MATCH, if_none_match.map(etag)),
        (
            http::header::IF_MODIFIED_SINCE,
            modified_since.and_then(date),
        ),
        (
            http::header::IF_UNMODIFIED_SINCE,
            unmodified_since.and_then(date),
        ),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            headers.insert(
                name,
                v.parse()
                    .map_err(|_| s3_error!(InvalidArgument, "x-amz-copy-source-if-*"))?,
            );
        }
    }
    Ok(headers)
}

/// The owner S3 names for a key's buckets and objects: its account.
fn owner(key: &S3Key) -> dto::Owner {
    dto::Owner {
        id: Some(key.account_id.clone()),
        display_name: Some(key.account_id.clone()),
    }
}

/// A new multipart upload's id: 128 random bits, base64url.
fn multipart_id() -> String {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A listing's page size from a client's `max-*`: S3's 1,000 at most.
fn page_size(asked: Option<i32>) -> usize {
    asked.unwrap_or(1000).clamp(0, 1000) as usize
}

fn millis(ms: i64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

impl FerryS3 {
    /// The multipart upload `id` of `key`'s account, for `object` in
    /// `row`: S3's `NoSuchUpload` for any other.
    async fn multipart(
        &self,
        key: &S3Key,
        row: &ConnectionRow,
        object: &str,
        id: &str,
    ) -> S3Result<MultipartUpload> {
        self.state
            .store
            .get_multipart(&key.account_id, id)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?
            .filter(|u| u.connection_id == row.id && u.key == object)
            .ok_or_else(|| s3_error!(NoSuchUpload))
    }

    /// The bucket `bucket` for `access` and its multipart upload `id` of
    /// `object`.
    async fn open_multipart(
        &self,
        key: &S3Key,
        bucket: &str,
        object: &str,
        id: &str,
        access: Access,
    ) -> S3Result<(ConnectionRow, MultipartUpload)> {
        let row = self.bucket(key, bucket, access).await?;
        let upload = self.multipart(key, &row, object, id).await?;
        Ok((row, upload))
    }

    /// Discards every part sent to multipart upload `id` (best effort).
    async fn discard_parts(&self, key: &S3Key, id: &str) {
        let sessions = match self
            .state
            .store
            .multipart_sessions_of(&key.account_id, id)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not list a multipart upload's parts");
                return;
            }
        };
        for session in sessions {
            if let Err(p) = super::uploads::terminate(&self.state, &key.account_id, &session).await
            {
                tracing::debug!(upload.id = %session, problem = %p, "a part was already gone");
            }
        }
    }
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
            owner: Some(owner(&key)),
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
        let (target, host) = self
            .object_target(&key, &req.input.bucket, Access::Read)
            .await?;
        // A HEAD is held to the egress quota as a GET is, as at a spoke,
        // whose read grant covers both.
        crate::limits::check(&self.state, &key.account_id, Use::Read)
            .await
            .map_err(problem_error)?;
        door::head_object(host, &target, &req.input.key, &req.headers).await
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let key = self.key_of(&req).await?;
        let (mut target, host) = self
            .object_target(&key, &req.input.bucket, Access::Read)
            .await?;
        target.throttle = crate::limits::admit(&self.state, &key.account_id, Use::Read)
            .await
            .map_err(problem_error)?;
        door::get_object(host, &target, &req).await
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let key = self.key_of(&req).await?;
        let (mut target, host) = self
            .object_target(&key, &req.input.bucket, Access::Write)
            .await?;
        let length = req.input.content_length.and_then(|n| u64::try_from(n).ok());
        target.throttle = crate::limits::admit(&self.state, &key.account_id, Use::Write(length))
            .await
            .map_err(problem_error)?;
        door::put_object(host, &target, req).await
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
        let row = self.bucket(&key, &input.bucket, Access::Write).await?;
        ferry_common::path::ObjectPath::parse(&input.key)
            .map_err(|e| s3_error!(InvalidArgument, "{e}"))?;
        let content_type = input
            .content_type
            .filter(|ct| ct.len() <= 255 && ct.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
        let kept = door::kept_headers(&req.headers)?;
        let now = now_ms();
        let upload = MultipartUpload {
            id: multipart_id(),
            account_id: key.account_id.clone(),
            connection_id: row.id,
            key: input.key.clone(),
            content_type,
            created_at: now,
            expires_at: now.saturating_add(self.state.uploads.expiry_ms),
            headers: kept,
        };
        self.state
            .store
            .create_multipart(&upload)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let key = self.key_of(&req).await?;
        let (row, _) = self
            .open_multipart(
                &key,
                &req.input.bucket,
                &req.input.key,
                &req.input.upload_id,
                Access::Write,
            )
            .await?;
        let head = Request::new(());
        let host = super::uploads::host(&self.state, key.account_id.clone(), &head);
        door::upload_part(host, &row.name, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let (row, _) = self
            .open_multipart(
                &key,
                &input.bucket,
                &input.key,
                &input.upload_id,
                Access::Write,
            )
            .await?;
        let dto::CopySource::Bucket {
            bucket: from_bucket,
            key: from_key,
            version_id: None,
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copies name a bucket and a key"));
        };
        // The source is read here, by range, and becomes the part.
        let (target, host) = self.object_target(&key, from_bucket, Access::Read).await?;
        let mut headers = HeaderMap::new();
        if let Some(range) = &input.copy_source_range {
            headers.insert(
                http::header::RANGE,
                range
                    .parse()
                    .map_err(|_| s3_error!(InvalidArgument, "x-amz-copy-source-range"))?,
            );
        }
        headers.extend(copy_conditions(
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )?);
        let source = door::read(host, &target, from_key, Method::GET, &headers).await?;
        let len = source
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| s3_error!(InternalError))?;
        let part_of = ferry_common::uploads::S3PartOf {
            upload: input.upload_id.clone(),
            number: u32::try_from(input.part_number).map_err(|_| s3_error!(InvalidArgument))?,
        };
        let uploads = super::uploads::host(&self.state, key.account_id.clone(), &Request::new(()));
        let id = door::tus_part(uploads, &row.name, part_of, len, source.into_body()).await?;
        Ok(S3Response::new(dto::UploadPartCopyOutput {
            copy_part_result: Some(dto::CopyPartResult {
                e_tag: Some(dto::ETag::Strong(id)),
                last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let (row, upload) = self
            .open_multipart(
                &key,
                &input.bucket,
                &input.key,
                &input.upload_id,
                Access::Write,
            )
            .await?;
        let named: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let number = p.part_number.ok_or_else(|| s3_error!(InvalidPart))?;
                let etag = p
                    .e_tag
                    .map(|e| e.value().to_owned())
                    .ok_or_else(|| s3_error!(InvalidPart))?;
                Ok((number, etag))
            })
            .collect::<S3Result<_>>()?;
        if named.is_empty() {
            return Err(s3_error!(MalformedXML, "name the parts to join"));
        }
        if named.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(s3_error!(InvalidPartOrder));
        }
        // Each part named must be the one last sent under its number; all
        // but the last at least S3's smallest part.
        let sent = self
            .state
            .store
            .multipart_parts(&key.account_id, &upload.id)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?;
        let last = named.len() - 1;
        for (i, (number, etag)) in named.iter().enumerate() {
            let part = sent
                .iter()
                .find(|p| i64::from(p.number) == i64::from(*number) && p.upload_id == *etag)
                .ok_or_else(|| {
                    s3_error!(InvalidPart, "part {number} is not one sent with this ETag")
                })?;
            if i < last && part.size < s3_parts::MIN_PART {
                return Err(s3_error!(EntityTooSmall));
            }
        }
        let concat = named
            .iter()
            .map(|(_, id)| format!("/v1/uploads/{id}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header("tus-resumable", "1.0.0")
            .header("upload-concat", format!("final;{concat}"));
        if let Some(ct) = &upload.content_type {
            use base64::Engine as _;
            let value = base64::engine::general_purpose::STANDARD.encode(ct);
            builder = builder.header("upload-metadata", format!("filetype {value}"));
        }
        let join = builder
            .body(ferry_common::body::empty())
            .map_err(|_| s3_error!(InvalidRequest))?;
        self.tus_create(&key, &row, Some(&input.key), join).await?;
        if !upload.headers.is_empty()
            && let Err(e) = self
                .state
                .store
                .set_object_headers(
                    &row.id,
                    &input.key,
                    upload.content_type.as_deref(),
                    &upload.headers,
                )
                .await
        {
            tracing::warn!(error = %e, "could not keep a multipart upload's header fields");
        }
        // Done: the upload is forgotten, and the parts it did not join
        // discarded now rather than at their expiry.
        if let Err(e) = self
            .state
            .store
            .delete_multipart(&key.account_id, &upload.id)
            .await
        {
            tracing::warn!(error = %e, "could not forget a completed multipart upload");
        }
        self.discard_parts(&key, &upload.id).await;
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
        let key = self.key_of(&req).await?;
        let input = req.input;
        let (_, upload) = self
            .open_multipart(
                &key,
                &input.bucket,
                &input.key,
                &input.upload_id,
                Access::Write,
            )
            .await?;
        self.state
            .store
            .delete_multipart(&key.account_id, &upload.id)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?;
        self.discard_parts(&key, &upload.id).await;
        let mut answer = S3Response::new(dto::AbortMultipartUploadOutput::default());
        answer.status = Some(StatusCode::NO_CONTENT);
        Ok(answer)
    }

    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let (_, upload) = self
            .open_multipart(
                &key,
                &input.bucket,
                &input.key,
                &input.upload_id,
                Access::Read,
            )
            .await?;
        let after = u32::try_from(input.part_number_marker.unwrap_or(0)).unwrap_or(0);
        let max = page_size(input.max_parts);
        let mut parts: Vec<MultipartPart> = self
            .state
            .store
            .multipart_parts(&key.account_id, &upload.id)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?
            .into_iter()
            .filter(|p| p.number > after)
            .collect();
        let truncated = parts.len() > max;
        parts.truncate(max);
        let next = parts.last().map(|p| p.number as i32);
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| dto::Part {
                        part_number: Some(p.number as i32),
                        e_tag: Some(dto::ETag::Strong(p.upload_id)),
                        size: Some(p.size as i64),
                        last_modified: Some(millis(p.written_at)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            storage_class: Some(dto::StorageClass::from_static(dto::StorageClass::STANDARD)),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        let key = self.key_of(&req).await?;
        let input = req.input;
        let row = self.bucket(&key, &input.bucket, Access::Read).await?;
        if input.delimiter.as_deref().is_some_and(|d| !d.is_empty()) {
            return Err(s3_error!(
                NotImplemented,
                "multipart uploads are listed without a delimiter"
            ));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = page_size(input.max_uploads);
        let key_marker = input.key_marker.clone().unwrap_or_default();
        // Without a key marker, the id marker means nothing (as in S3).
        let id_marker = if key_marker.is_empty() {
            String::new()
        } else {
            input.upload_id_marker.clone().unwrap_or_default()
        };
        let mut uploads = self
            .state
            .store
            .list_multipart(&row.id, &prefix, (&key_marker, &id_marker), max as i64 + 1)
            .await
            .map_err(|e| s3_error!(e, ServiceUnavailable))?;
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        let (next_key, next_id) = match uploads.last() {
            Some(u) if truncated => (Some(u.key.clone()), Some(u.id.clone())),
            _ => (None, None),
        };
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| dto::MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.id),
                        initiated: Some(millis(u.created_at)),
                        storage_class: Some(dto::StorageClass::from_static(
                            dto::StorageClass::STANDARD,
                        )),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
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
        let replace = req
            .input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == dto::MetadataDirective::REPLACE);
        let kept = door::kept_headers(&req.headers)?;
        let input = req.input;
        let dto::CopySource::Bucket {
            bucket: from_bucket,
            key: from_key,
            version_id: None,
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copies name a bucket and a key"));
        };
        // The source is read, the target written: the key must be allowed
        // both.
        self.bucket(&key, from_bucket, Access::Read).await?;
        let row = self.bucket(&key, &input.bucket, Access::Write).await?;
        let conditions = copy_conditions(
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )?;
        if !conditions.is_empty() {
            // A source the conditions do not hold for is S3's 412, a
            // "not modified" included.
            match self
                .read(&key, from_bucket, from_key, Method::HEAD, &conditions)
                .await
            {
                Ok(_) => {}
                Err(e) if e.status_code() == Some(StatusCode::NOT_MODIFIED) => {
                    return Err(s3_error!(PreconditionFailed));
                }
                Err(e) => return Err(e),
            }
        }
        if **from_bucket != *input.bucket {
            // Between connections: the hub reads the source and writes
            // the copy, its kept fields carried or replaced.
            let (source_target, source_host) =
                self.object_target(&key, from_bucket, Access::Read).await?;
            let source = door::read(
                source_host,
                &source_target,
                from_key,
                Method::GET,
                &HeaderMap::new(),
            )
            .await?;
            let mut headers = HeaderMap::new();
            let content_type = if replace {
                input.content_type.as_deref().and_then(|ct| ct.parse().ok())
            } else {
                source.headers().get(http::header::CONTENT_TYPE).cloned()
            };
            if let Some(ct) = content_type {
                headers.insert(http::header::CONTENT_TYPE, ct);
            }
            if let Some(len) = source.headers().get(http::header::CONTENT_LENGTH) {
                headers.insert(http::header::CONTENT_LENGTH, len.clone());
            }
            let kept = if replace {
                kept
            } else {
                door::kept_headers(source.headers())?
            };
            let (target, host) = self
                .object_target(&key, &input.bucket, Access::Write)
                .await?;
            let written = door::file_keeping(
                host,
                &target,
                &input.key,
                Method::PUT,
                &headers,
                source.into_body(),
                kept,
            )
            .await?;
            return Ok(S3Response::new(dto::CopyObjectOutput {
                copy_object_result: Some(dto::CopyObjectResult {
                    e_tag: etag(&written),
                    last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
                    ..Default::default()
                }),
                ..Default::default()
            }));
        }
        let onto_itself = **from_key == *input.key;
        if onto_itself && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata."
            ));
        }
        if !onto_itself {
            let target = self.target(&key, &row).await?;
            let res = super::connections::Resolved {
                account: key.account_id.clone(),
                row: row.clone(),
                op: target.op,
            };
            super::tree::relocate(
                &self.state,
                &res,
                from_key,
                &input.key,
                true,
                false,
                &Default::default(),
            )
            .await
            .map_err(problem_error)?;
        }
        if replace {
            // The object's representation as this request gives it, its
            // content's record kept (read first: the copy, or the object
            // itself, must be known to ferry).
            self.read(
                &key,
                &input.bucket,
                &input.key,
                Method::HEAD,
                &HeaderMap::new(),
            )
            .await?;
            let content_type = input.content_type.as_deref().filter(|ct| {
                ct.len() <= 255 && ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            });
            self.state
                .store
                .set_object_headers(&row.id, &input.key, content_type, &kept)
                .await
                .map_err(|e| s3_error!(e, ServiceUnavailable))?;
        }
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
            contents: Some(if input.fetch_owner == Some(true) {
                // The owner of every object is the key's account.
                let owner = owner(&key);
                page.contents
                    .into_iter()
                    .map(|o| dto::Object {
                        owner: Some(owner.clone()),
                        ..o
                    })
                    .collect()
            } else {
                page.contents
            }),
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

/// What the signature check of a spoke's S3 request saw.
struct Seen {
    op: String,
    bucket: String,
    object: Option<String>,
    /// A part's multipart upload (`uploadId`).
    upload_id: Option<String>,
    access_key: String,
    secret: String,
}

/// Records what a checked request asks, then stops it: a head checked
/// for a spoke is never served here.
struct Checked(Arc<std::sync::Mutex<Option<Seen>>>);

#[async_trait::async_trait]
impl s3s::access::S3Access for Checked {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        let Some(cred) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "sign the request with an S3 key"));
        };
        let (bucket, object) = match cx.s3_path() {
            s3s::path::S3Path::Root => (String::new(), None),
            s3s::path::S3Path::Bucket { bucket } => (bucket.to_string(), None),
            s3s::path::S3Path::Object { bucket, key } => {
                (bucket.to_string(), Some(key.to_string()))
            }
        };
        let upload_id = cx.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|p| p.strip_prefix("uploadId="))
                .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
                .map(|v| v.into_owned())
        });
        *self.0.lock().expect("poisoned") = Some(Seen {
            op: cx.s3_op().name().to_owned(),
            bucket,
            object,
            upload_id,
            access_key: cred.access_key.clone(),
            secret: cred.secret_key.expose().to_owned(),
        });
        // Stops s3s before it reads a body (there is none).
        Err(s3_error!(NotImplemented))
    }
}

/// The operations a spoke serves itself: their bytes stream there.
fn served_at_spokes(op: &str) -> Option<Access> {
    match op {
        "GetObject" | "HeadObject" => Some(Access::Read),
        "PutObject" | "UploadPart" => Some(Access::Write),
        _ => None,
    }
}

/// How long a pass stands for its client: long enough for the request's
/// grant and upload calls, which come at its start.
const PASS_TTL_MS: i64 = 5 * 60 * 1000;

/// `s3_authorize`: checks the signature of a spoke's S3 request from its
/// head, with the same s3s checks as the door (signature, clock skew,
/// presigned expiry, the key), and says whether the spoke serves it:
/// only an object operation whose bytes stream there, in a bucket the key
/// may use so, on a provider the spoke reaches. Anything else is
/// forwarded whole and answered by the hub's door, refusals included, so
/// a spoke learns nothing of buckets the key may not use. A signature
/// that does not hold is answered with S3's error for the client.
pub async fn authorize(
    state: &Arc<AppState>,
    spoke: &str,
    req: Request<Body>,
    limit: usize,
) -> ApiResult {
    let asked: S3AuthorizeRequest = read_json(req, limit).await?;
    let mut head = Request::builder()
        .method(asked.method.as_str())
        .uri(asked.uri.as_str());
    for (name, value) in &asked.headers {
        head = head.header(name.as_str(), value.as_str());
    }
    let head = head
        .body(ferry_common::body::empty())
        .map_err(|_| Problem::new(ErrorCode::InvalidField, "the request head is not HTTP"))?;
    let forward = || Ok(json(StatusCode::OK, &S3Authorized { serve: None }));
    if !speaks_s3(&head) {
        return forward();
    }
    let seen = Arc::new(std::sync::Mutex::new(None));
    let signer = Arc::new(std::sync::Mutex::new(None));
    let mut builder = s3s::service::S3ServiceBuilder::new(FerryS3 {
        state: state.clone(),
        signer: signer.clone(),
    });
    builder.set_auth(Keys {
        state: state.clone(),
        signer: signer.clone(),
    });
    builder.set_access(Checked(seen.clone()));
    state.s3_hosts.apply(&mut builder);
    let refusal = door::call(&builder.build(), head).await;
    let Some(seen) = seen.lock().expect("poisoned").take() else {
        // The signature, the clock or the key does not hold: S3's words.
        return Ok(refusal);
    };
    let Some(access) = served_at_spokes(&seen.op) else {
        return forward();
    };
    let Some(key) = signer
        .lock()
        .expect("poisoned")
        .clone()
        .filter(|k| k.access_key_id == seen.access_key)
    else {
        return forward();
    };
    let doorway = FerryS3 {
        state: state.clone(),
        signer,
    };
    let Ok(row) = doorway.bucket(&key, &seen.bucket, access).await else {
        return forward();
    };
    if !super::internal::direct(&row.provider) {
        return forward();
    }
    let s3_upload = if seen.op == "UploadPart" {
        // A part of a multipart upload of this key: else the door says so.
        let (Some(id), Some(object)) = (&seen.upload_id, &seen.object) else {
            return forward();
        };
        if doorway.multipart(&key, &row, object, id).await.is_err() {
            return forward();
        }
        Some(id.clone())
    } else {
        None
    };
    let path = match (seen.op.as_str(), seen.object) {
        ("UploadPart", _) => None,
        (_, Some(object)) if ferry_common::path::ObjectPath::parse(&object).is_ok() => Some(object),
        _ => return forward(),
    };
    let pass = PassClaims {
        spoke: spoke.to_owned(),
        account: key.account_id.clone(),
        access_key: key.access_key_id.clone(),
        connection: row.id.clone(),
        path,
        write: access == Access::Write,
        s3_upload,
        until_ms: now_ms().saturating_add(PASS_TTL_MS),
    };
    tracing::debug!(spoke.id = %spoke, s3_key.id = %key.access_key_id, op = seen.op, "a spoke serves an S3 request");
    Ok(json(
        StatusCode::OK,
        &S3Authorized {
            serve: Some(S3Serve {
                access_key: seen.access_key,
                secret: seen.secret,
                pass: state.grants.issue_pass(&pass),
                connection_id: row.id,
            }),
        },
    ))
}
