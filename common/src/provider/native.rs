//! The provider's own multi-request uploads, for resumable uploads whose
//! requests outlive one node's writer: S3's multipart uploads
//! ([`super::s3_parts`]) and Azure's uncommitted blocks
//! ([`super::azure_blocks`]). A connection's [`Multipart`] is built from
//! its configuration, as its operator is, and carries the connection's
//! credentials and HTTP client; the requests it makes are signed here, not
//! by OpenDAL, and their refusals are noted and logged the same way.

use bytes::Bytes;
use futures_util::Stream;
use opendal::ErrorKind;

use super::answer::{FailedAnswer, note};
use super::azure_blocks::AzureBlocks;
use super::egress;
use super::endpoint::EndpointPolicy;
use super::remote::Remote;
use super::s3_parts::{self, S3Parts};

/// A connection's multi-request uploads.
#[derive(Debug, Clone)]
pub enum Multipart {
    /// An S3 connection: one multipart upload per session, its id in the
    /// session.
    S3(S3Parts),
    /// An Azure Blob connection: blocks of the session's staging blob.
    Azure(AzureBlocks),
}

/// The `provider_upload` of a session whose bytes go into Azure blocks:
/// Azure needs no upload started, only a blob to hold them.
pub const AZURE_BLOCKS: &str = "blocks";

impl Multipart {
    /// The multipart uploads of a connection of `provider` with `config`
    /// (already checked when the connection was made), where the provider
    /// has them.
    pub fn of(provider: &str, config: &serde_json::Value, policy: EndpointPolicy) -> Option<Self> {
        S3Parts::of(provider, config, policy)
            .map(Self::S3)
            .or_else(|| AzureBlocks::of(provider, config, policy).map(Self::Azure))
    }

    /// Whether connections of `provider` have multi-request uploads of
    /// their own (without reading a configuration).
    pub fn serves(provider: &str) -> bool {
        provider == Remote::S3.as_str() || provider == Remote::Azblob.as_str()
    }

    /// The smallest part but for the last.
    pub fn min_part(&self) -> u64 {
        match self {
            Self::S3(_) => s3_parts::MIN_PART,
            Self::Azure(_) => 1,
        }
    }

    /// The largest part.
    pub fn max_part(&self) -> u64 {
        match self {
            Self::S3(_) => s3_parts::MAX_PART,
            Self::Azure(_) => super::azure_blocks::MAX_BLOCK,
        }
    }

    /// The most parts of one upload.
    pub fn max_parts(&self) -> u32 {
        match self {
            Self::S3(_) => s3_parts::MAX_PARTS,
            Self::Azure(_) => super::azure_blocks::MAX_BLOCKS,
        }
    }

    /// Sends part `number` of the upload `upload` of the object at `path`:
    /// `len` bytes of `body`. The tag that names it at completion (S3's
    /// ETag, Azure's block id).
    pub async fn send_part<S>(
        &self,
        path: &str,
        upload: &str,
        number: u32,
        len: u64,
        body: S,
    ) -> Result<String, opendal::Error>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        match self {
            Self::S3(s3) => s3.upload_part(path, upload, number, len, body).await,
            Self::Azure(az) => az.put_block(path, number, len, body).await,
        }
    }
}

/// Signs (with `sign`) and sends one request of `provider`; a refusal
/// becomes an error with the answer noted and logged, never passed on.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    client: &reqwest::Client,
    method: http::Method,
    url: url::Url,
    headers: Vec<(&'static str, String)>,
    body: reqwest::Body,
    sign: impl AsyncFnOnce(&mut http::request::Parts) -> reqsign_core::Result<()>,
    provider: &'static str,
    what: &'static str,
) -> Result<reqwest::Response, opendal::Error> {
    let mut req = http::Request::builder().method(method).uri(url.as_str());
    for (name, value) in &headers {
        req = req.header(*name, value);
    }
    let (mut parts, ()) = req
        .body(())
        .map_err(|e| failed(ErrorKind::Unexpected, "the request is invalid", e))?
        .into_parts();
    sign(&mut parts)
        .await
        .map_err(|e| failed(ErrorKind::Unexpected, "signing a request", e))?;
    // The signer may have moved the credential into the query (a SAS).
    let url = url::Url::parse(&parts.uri.to_string())
        .map_err(|e| failed(ErrorKind::Unexpected, "the signed URL is invalid", e))?;
    let sent = client
        .request(parts.method, url)
        .headers(parts.headers)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) if egress::is_refusal(&e) => return Err(egress::refused_error(&e)),
        Err(e) => return Err(failed(ErrorKind::Unexpected, what, e).set_temporary()),
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    note(FailedAnswer::of(status, resp.headers()));
    let text = resp.text().await.unwrap_or_default();
    tracing::warn!(
        status = status.as_u16(),
        answer = %super::failure::scrub(&text),
        "{provider} refused a request ({what})"
    );
    Err(refused(status, what))
}

/// The URL of `path` under the connection's `root` at `base`, with
/// `query`; an internal address literal refused unless `policy` allows it
/// (names are checked when they are looked up, [`super::egress`]).
pub(super) fn checked_url(
    base: &str,
    root: &str,
    path: &str,
    query: &str,
    policy: EndpointPolicy,
) -> Result<url::Url, opendal::Error> {
    let text = format!(
        "{base}/{}{query}",
        opendal::raw::percent_encode_path(&opendal::raw::build_abs_path(root, path))
    );
    let url = url::Url::parse(&text)
        .map_err(|e| failed(ErrorKind::Unexpected, "the provider URL is invalid", e))?;
    if !policy.allow_private {
        egress::refuse_internal_literal(&url).map_err(egress::refused_error)?;
    }
    Ok(url)
}

/// An error of `kind` saying `what` failed, with `cause` scrubbed of
/// anything that looks like a secret.
pub(super) fn failed(
    kind: ErrorKind,
    what: &'static str,
    cause: impl std::fmt::Display,
) -> opendal::Error {
    opendal::Error::new(kind, what).with_context("cause", super::failure::scrub(&cause.to_string()))
}

/// The error of a provider's refusal with `status`; a temporary one for
/// the statuses a retry may cure.
fn refused(status: reqwest::StatusCode, what: &'static str) -> opendal::Error {
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        412 => ErrorKind::ConditionNotMatch,
        429 | 503 => ErrorKind::RateLimited,
        _ => ErrorKind::Unexpected,
    };
    let e = failed(kind, what, status);
    if status.is_server_error() || status.as_u16() == 429 {
        e.set_temporary()
    } else {
        e
    }
}
