//! S3 multipart uploads that outlive a request: a resumable upload's
//! session keeps one multipart upload at the provider, and each append
//! sends its bytes straight into that upload's parts.
//!
//! OpenDAL keeps its multipart uploads inside one writer, which dies with
//! the request; an upload that continues through another node needs the
//! upload id, part numbers and ETags kept in ferry's store. This module
//! makes the five S3 calls that needs — create, upload a part (streamed,
//! its length known), copy a part from an object, complete, abort — signed
//! with SigV4 from the connection's own credentials, through the HTTP
//! client and address checks every operator of the connection's policy
//! uses ([`super::egress`]). An answer that refuses a request is noted for
//! the problem a client sees ([`super::answer`]) and logged, never passed
//! on.

use bytes::Bytes;
use futures_util::Stream;
use opendal::ErrorKind;
use serde::Deserialize;

use super::egress;
use super::endpoint::EndpointPolicy;
use super::native::failed;
use super::remote::{Remote, S3Config};

/// S3's smallest part, but for the last.
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART: u64 = 5 << 30;
/// S3's most parts in one upload.
pub const MAX_PARTS: u32 = 10_000;
/// The part size ferry aims for when nothing asks for larger parts.
pub const BASE_PART: u64 = 8 << 20;

/// The size of part `number` of an upload of `length` bytes (none while
/// deferred): [`BASE_PART`], or larger so that the upload fits in 9,000
/// parts (the rest are left for appends that end between parts); with the
/// length unknown, doubling every thousand parts, which reaches 8 TiB
/// within S3's limit.
pub fn part_target(length: Option<u64>, number: u32) -> u64 {
    let size = match length {
        Some(n) => BASE_PART.max(n.div_ceil(9_000).next_multiple_of(1 << 20)),
        None => BASE_PART << (number.saturating_sub(1) / 1_000).min(9),
    };
    size.min(MAX_PART)
}

/// One connection's bucket, as its multipart calls need it.
#[derive(Debug, Clone)]
pub struct S3Parts {
    client: reqwest::Client,
    policy: EndpointPolicy,
    /// `scheme://host[:port]` with the bucket for virtual-host style, or
    /// `scheme://host[:port]/bucket` for path style; no trailing `/`.
    base: String,
    bucket: String,
    /// The connection's root inside the bucket, `/` or `/prefix/`.
    root: String,
    region: String,
    credential: Option<reqsign_aws_v4::Credential>,
}

impl S3Parts {
    /// The multipart calls of a connection of `provider` with `config`,
    /// when it is S3 (its configuration already checked by
    /// [`super::remote::build`], which every connection passes first).
    pub fn of(provider: &str, config: &serde_json::Value, policy: EndpointPolicy) -> Option<Self> {
        if provider != Remote::S3.as_str() {
            return None;
        }
        let c: S3Config = serde_json::from_value(config.clone()).ok()?;
        let region = c.region.unwrap_or_else(|| "us-east-1".into());
        let endpoint = c
            .endpoint
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let base = if c.virtual_host_style {
            let (scheme, host) = endpoint.split_once("://")?;
            format!("{scheme}://{}.{host}", c.bucket)
        } else {
            format!("{endpoint}/{}", c.bucket)
        };
        let credential = match (c.access_key_id, c.secret_access_key) {
            (Some(id), Some(secret)) => Some(reqsign_aws_v4::Credential {
                access_key_id: id,
                secret_access_key: secret,
                session_token: c.session_token,
                expires_in: None,
            }),
            _ => None,
        };
        Some(Self {
            client: egress::client(policy),
            policy,
            base,
            bucket: c.bucket,
            root: opendal::raw::normalize_root(c.root.as_deref().unwrap_or("/")),
            region,
            credential,
        })
    }

    /// The key of `path` (relative to the connection's root) in the bucket.
    fn key(&self, path: &str) -> String {
        opendal::raw::build_abs_path(&self.root, path)
    }

    fn url(&self, path: &str, query: &str) -> Result<url::Url, opendal::Error> {
        super::native::checked_url(&self.base, &self.root, path, query, self.policy)
    }

    /// Signs and sends one request; a refusal becomes an error with the
    /// answer noted and logged.
    async fn send(
        &self,
        method: http::Method,
        url: url::Url,
        mut headers: Vec<(&'static str, String)>,
        body: reqwest::Body,
        what: &'static str,
    ) -> Result<reqwest::Response, opendal::Error> {
        headers.push(("x-amz-content-sha256", "UNSIGNED-PAYLOAD".into()));
        let sign = async |parts: &mut http::request::Parts| {
            let Some(cred) = &self.credential else {
                return Ok(());
            };
            use reqsign_core::SignRequest as _;
            reqsign_aws_v4::RequestSigner::new("s3", &self.region)
                .sign_request(&reqsign_core::Context::new(), parts, Some(cred), None)
                .await
        };
        super::native::send(&self.client, method, url, headers, body, sign, "S3", what).await
    }

    /// Reads an answer's XML body, which S3 may use to refuse a request it
    /// already answered with 200 (completing, copying).
    async fn xml<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
        what: &'static str,
    ) -> Result<T, opendal::Error> {
        let text = resp
            .text()
            .await
            .map_err(|e| failed(ErrorKind::Unexpected, what, e).set_temporary())?;
        if let Ok(err) = quick_xml::de::from_str::<S3Error>(&text)
            && !err.code.is_empty()
        {
            tracing::warn!(code = %err.code, "S3 refused a multipart request ({what}) in its answer");
            let kind = match err.code.as_str() {
                "NoSuchUpload" | "NoSuchKey" => ErrorKind::NotFound,
                _ => ErrorKind::Unexpected,
            };
            let e = failed(kind, what, &err.code);
            return Err(if err.code == "InternalError" || err.code == "SlowDown" {
                e.set_temporary()
            } else {
                e
            });
        }
        quick_xml::de::from_str(&text).map_err(|e| {
            tracing::warn!(error = %e, "S3 answered a multipart request ({what}) with unreadable XML");
            failed(ErrorKind::Unexpected, what, "an unreadable answer")
        })
    }

    /// Starts a multipart upload of the object at `path`; its upload id.
    pub async fn create(
        &self,
        path: &str,
        content_type: Option<&str>,
    ) -> Result<String, opendal::Error> {
        let mut headers = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.to_owned()));
        }
        let what = "starting a multipart upload";
        let resp = self
            .send(
                http::Method::POST,
                self.url(path, "?uploads")?,
                headers,
                reqwest::Body::from(Bytes::new()),
                what,
            )
            .await?;
        let started: Initiated = Self::xml(resp, what).await?;
        if started.upload_id.is_empty() {
            return Err(failed(ErrorKind::Unexpected, what, "no upload id"));
        }
        Ok(started.upload_id)
    }

    /// Sends part `number` of `upload_id`: `len` bytes from `body`, which
    /// must bring exactly that many. Its ETag.
    pub async fn upload_part<S>(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        len: u64,
        body: S,
    ) -> Result<String, opendal::Error>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let url = self.url(path, &part_query(upload_id, number))?;
        let what = "sending a part";
        let resp = self
            .send(
                http::Method::PUT,
                url,
                vec![("content-length", len.to_string())],
                reqwest::Body::wrap_stream(body),
                what,
            )
            .await?;
        etag_of(&resp).ok_or_else(|| failed(ErrorKind::Unexpected, what, "no ETag"))
    }

    /// Makes part `number` of `upload_id` from `range` of the object at
    /// `source` (in the same bucket), at the provider. Its ETag.
    pub async fn copy_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        source: &str,
        range: std::ops::Range<u64>,
    ) -> Result<String, opendal::Error> {
        let url = self.url(path, &part_query(upload_id, number))?;
        let what = "copying a part";
        let from = format!(
            "/{}/{}",
            self.bucket,
            opendal::raw::percent_encode_path(&self.key(source))
        );
        let headers = vec![
            ("x-amz-copy-source", from),
            (
                "x-amz-copy-source-range",
                format!("bytes={}-{}", range.start, range.end - 1),
            ),
        ];
        let resp = self
            .send(
                http::Method::PUT,
                url,
                headers,
                reqwest::Body::from(Bytes::new()),
                what,
            )
            .await?;
        let copied: Copied = Self::xml(resp, what).await?;
        Ok(copied.etag)
    }

    /// Completes `upload_id` from `parts` (number and ETag, ascending): the
    /// object appears at `path`, whole, at once.
    pub async fn complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), opendal::Error> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                quick_xml::escape::escape(etag.as_str())
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let url = self.url(path, &format!("?uploadId={}", encode(upload_id)))?;
        let what = "completing a multipart upload";
        let resp = self
            .send(
                http::Method::POST,
                url,
                vec![("content-type", "application/xml".into())],
                reqwest::Body::from(body),
                what,
            )
            .await?;
        let _: Completed = Self::xml(resp, what).await?;
        Ok(())
    }

    /// Abandons `upload_id`: S3 drops its parts. An upload already gone
    /// is not an error.
    pub async fn abort(&self, path: &str, upload_id: &str) -> Result<(), opendal::Error> {
        let url = self.url(path, &format!("?uploadId={}", encode(upload_id)))?;
        match self
            .send(
                http::Method::DELETE,
                url,
                Vec::new(),
                reqwest::Body::from(Bytes::new()),
                "abandoning a multipart upload",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn part_query(upload_id: &str, number: u32) -> String {
    format!("?partNumber={number}&uploadId={}", encode(upload_id))
}

fn etag_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(http::header::ETAG)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Initiated {
    #[serde(default)]
    upload_id: String,
}

#[derive(Deserialize)]
struct Copied {
    #[serde(rename = "ETag")]
    etag: String,
}

#[derive(Deserialize)]
struct Completed {}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3Error {
    #[serde(default)]
    code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_keep_within_s3s_limits() {
        assert_eq!(part_target(Some(1 << 30), 1), BASE_PART);
        // 5 TiB in at most 9,000 parts, each a whole number of MiB.
        let big = 5u64 << 40;
        let size = part_target(Some(big), 1);
        assert!(big.div_ceil(size) <= 9_000 && size.is_multiple_of(1 << 20));
        // Deferred: the first 10,000 parts hold more than 5 TiB.
        let total: u64 = (1..=MAX_PARTS).map(|n| part_target(None, n)).sum();
        assert!(total > big, "{total}");
        assert!((1..=MAX_PARTS).all(|n| (MIN_PART..=MAX_PART).contains(&part_target(None, n))));
    }

    #[test]
    fn urls_name_the_bucket_and_the_rooted_key() {
        let parts = |config: serde_json::Value| {
            S3Parts::of("s3", &config, EndpointPolicy::ANY).expect("an S3 connection")
        };
        let path_style = parts(serde_json::json!({
            "bucket": "bkt", "endpoint": "http://127.0.0.1:9000/", "root": "/pre/",
            "access_key_id": "a", "secret_access_key": "s",
        }));
        assert_eq!(
            path_style.url("a b/c.txt", "?uploads").unwrap().as_str(),
            "http://127.0.0.1:9000/bkt/pre/a%20b/c.txt?uploads"
        );
        let virtual_host = parts(serde_json::json!({
            "bucket": "bkt", "region": "eu-west-1", "virtual_host_style": true, "anonymous": true,
        }));
        assert_eq!(
            virtual_host.url("k", "").unwrap().as_str(),
            "https://bkt.s3.eu-west-1.amazonaws.com/k"
        );
        assert!(S3Parts::of("azblob", &serde_json::json!({}), EndpointPolicy::ANY).is_none());
        // An internal address literal is refused before any request.
        let strict = S3Parts::of(
            "s3",
            &serde_json::json!({"bucket": "bkt", "endpoint": "http://10.0.0.1", "anonymous": true}),
            EndpointPolicy::PUBLIC_ONLY,
        )
        .unwrap();
        assert!(strict.url("k", "").is_err());
    }

    #[test]
    fn answers_are_read_and_refusals_in_a_200_are_seen() {
        let started: Initiated = quick_xml::de::from_str(
            "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>u-1</UploadId></InitiateMultipartUploadResult>",
        )
        .unwrap();
        assert_eq!(started.upload_id, "u-1");
        let copied: Copied = quick_xml::de::from_str(
            "<CopyPartResult><LastModified>x</LastModified><ETag>&quot;abc&quot;</ETag></CopyPartResult>",
        )
        .unwrap();
        assert_eq!(copied.etag, "\"abc\"");
        let err: S3Error = quick_xml::de::from_str(
            "<Error><Code>InternalError</Code><Message>m</Message></Error>",
        )
        .unwrap();
        assert_eq!(err.code, "InternalError");
        let ok: Result<S3Error, _> = quick_xml::de::from_str(
            "<CompleteMultipartUploadResult><ETag>e</ETag></CompleteMultipartUploadResult>",
        );
        assert!(ok.map(|e| e.code.is_empty()).unwrap_or(true));
    }
}
