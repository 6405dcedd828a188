//! Azure Blob block uploads that outlive a request: a resumable upload's
//! appends go into uncommitted blocks of the session's staging blob, and
//! its completion commits them (`Put Block List`) and copies the blob to
//! its path at the provider (`Copy Blob`).
//!
//! The blocks go to a staging blob of the session's own rather than to the
//! object's path: a `Put Blob` at the path (another upload of the same
//! file) would throw uncommitted blocks there away. Requests are signed
//! with the connection's account key (Shared Key) or carry its SAS token,
//! through the HTTP client and address checks every operator of the
//! connection's policy uses ([`super::egress`]).

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use opendal::ErrorKind;

use super::egress;
use super::endpoint::EndpointPolicy;
use super::native::failed;
use super::remote::{AzblobConfig, Remote};

/// Azure's largest block.
pub const MAX_BLOCK: u64 = 4000 << 20;
/// Azure's most blocks in one blob.
pub const MAX_BLOCKS: u32 = 50_000;
/// The service version ferry's requests ask for (the one OpenDAL's use).
const VERSION: &str = "2022-11-02";
/// How long a copy the service finishes in the background is waited for.
const COPY_WAIT: Duration = Duration::from_secs(30 * 60);

/// One connection's container, as its block calls need it.
#[derive(Debug, Clone)]
pub struct AzureBlocks {
    client: reqwest::Client,
    policy: EndpointPolicy,
    /// `endpoint/container`, no trailing `/`.
    base: String,
    /// The connection's root inside the container, `/` or `/prefix/`.
    root: String,
    credential: reqsign_azure_storage::Credential,
}

impl AzureBlocks {
    /// The block calls of a connection of `provider` with `config`, when
    /// it is Azure Blob (its configuration already checked by
    /// [`super::remote::build`]).
    pub fn of(provider: &str, config: &serde_json::Value, policy: EndpointPolicy) -> Option<Self> {
        if provider != Remote::Azblob.as_str() {
            return None;
        }
        let c: AzblobConfig = serde_json::from_value(config.clone()).ok()?;
        let endpoint = c
            .endpoint
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", c.account_name));
        let credential = match (c.account_key, c.sas_token) {
            (Some(key), None) => reqsign_azure_storage::Credential::SharedKey {
                account_name: c.account_name,
                account_key: key,
            },
            (None, Some(token)) => reqsign_azure_storage::Credential::SasToken {
                token: token.trim_start_matches('?').to_owned(),
                expires_at: None,
            },
            _ => return None,
        };
        Some(Self {
            client: egress::client(policy),
            policy,
            base: format!("{endpoint}/{}", c.container),
            root: opendal::raw::normalize_root(c.root.as_deref().unwrap_or("/")),
            credential,
        })
    }

    fn url(&self, path: &str, query: &str) -> Result<url::Url, opendal::Error> {
        super::native::checked_url(&self.base, &self.root, path, query, self.policy)
    }

    async fn send(
        &self,
        method: http::Method,
        url: url::Url,
        mut headers: Vec<(&'static str, String)>,
        body: reqwest::Body,
        what: &'static str,
    ) -> Result<reqwest::Response, opendal::Error> {
        headers.push(("x-ms-version", VERSION.into()));
        let sign = async |parts: &mut http::request::Parts| {
            use reqsign_core::SignRequest as _;
            reqsign_azure_storage::RequestSigner::new()
                .sign_request(
                    &reqsign_core::Context::new(),
                    parts,
                    Some(&self.credential),
                    None,
                )
                .await
        };
        super::native::send(
            &self.client,
            method,
            url,
            headers,
            body,
            sign,
            "Azure",
            what,
        )
        .await
    }

    /// The id of block `number`: every block of a blob has an id of one
    /// length.
    pub fn block_id(number: u32) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("ferry-{number:08}"))
    }

    /// Sends block `number` of the blob at `path`: `len` bytes from
    /// `body`, which must bring exactly that many. Its id.
    pub async fn put_block<S>(
        &self,
        path: &str,
        number: u32,
        len: u64,
        body: S,
    ) -> Result<String, opendal::Error>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let id = Self::block_id(number);
        let query = format!("?comp=block&blockid={}", encode(&id));
        self.send(
            http::Method::PUT,
            self.url(path, &query)?,
            vec![("content-length", len.to_string())],
            reqwest::Body::wrap_stream(body),
            "sending a block",
        )
        .await?;
        Ok(id)
    }

    /// Commits the blocks `ids`, in order, as the blob at `path`.
    pub async fn put_block_list(
        &self,
        path: &str,
        ids: &[String],
        content_type: Option<&str>,
    ) -> Result<(), opendal::Error> {
        let mut body = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for id in ids {
            body.push_str(&format!(
                "<Latest>{}</Latest>",
                quick_xml::escape::escape(id.as_str())
            ));
        }
        body.push_str("</BlockList>");
        let mut headers = vec![
            ("content-type", "application/xml".to_owned()),
            ("content-length", body.len().to_string()),
        ];
        if let Some(ct) = content_type {
            headers.push(("x-ms-blob-content-type", ct.to_owned()));
        }
        self.send(
            http::Method::PUT,
            self.url(path, "?comp=blocklist")?,
            headers,
            reqwest::Body::from(body),
            "committing blocks",
        )
        .await
        .map(|_| ())
    }

    /// Copies the blob at `from` to `to` at the provider, waiting for a
    /// copy the service finishes in the background.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), opendal::Error> {
        let mut source = self.url(from, "")?;
        if let reqsign_azure_storage::Credential::SasToken { token, .. } = &self.credential {
            // A SAS-authorised copy names its source with the same token.
            source.set_query(Some(token));
        }
        let what = "copying a blob";
        let resp = self
            .send(
                http::Method::PUT,
                self.url(to, "")?,
                vec![
                    ("x-ms-copy-source", source.to_string()),
                    ("content-length", "0".into()),
                ],
                reqwest::Body::from(Bytes::new()),
                what,
            )
            .await?;
        let mut status = copy_status(resp.headers());
        let deadline = tokio::time::Instant::now() + COPY_WAIT;
        let mut pause = Duration::from_millis(100);
        while status.as_deref() == Some("pending") {
            if tokio::time::Instant::now() > deadline {
                return Err(failed(
                    ErrorKind::Unexpected,
                    what,
                    "the copy did not finish",
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            let resp = self
                .send(
                    http::Method::HEAD,
                    self.url(to, "")?,
                    Vec::new(),
                    reqwest::Body::from(Bytes::new()),
                    what,
                )
                .await?;
            status = copy_status(resp.headers());
        }
        match status.as_deref() {
            None | Some("success") => Ok(()),
            Some(other) => Err(failed(ErrorKind::Unexpected, what, other)),
        }
    }
}

fn copy_status(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("x-ms-copy-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_are_of_one_length_and_urls_name_the_container() {
        assert_eq!(
            AzureBlocks::block_id(1).len(),
            AzureBlocks::block_id(MAX_BLOCKS).len()
        );
        let az = AzureBlocks::of(
            "azblob",
            &serde_json::json!({
                "container": "ctr", "account_name": "acct", "account_key": "a2V5",
                "endpoint": "http://127.0.0.1:10000/acct", "root": "/pre",
            }),
            EndpointPolicy::ANY,
        )
        .unwrap();
        assert_eq!(
            az.url("a b.bin", "?comp=blocklist").unwrap().as_str(),
            "http://127.0.0.1:10000/acct/ctr/pre/a%20b.bin?comp=blocklist"
        );
        assert!(AzureBlocks::of("s3", &serde_json::json!({}), EndpointPolicy::ANY).is_none());
    }
}
