//! The ferry client library: the API as typed calls, the choice of the
//! nearest spoke, and transfers that resume and move to another spoke
//! when the one in use fails.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::Error> {
//! let hub = url::Url::parse("https://api.ferry.example.com").unwrap();
//! let client = ferry_client::Client::new(hub, "fry_…".into())?;
//! client.choose_endpoint().await?; // probes the spokes, reports, picks
//! let page = client.list("photos", "2026/", None, 100).await?;
//! # let _ = page; Ok(()) }
//! ```

mod endpoints;
mod error;
mod limit;
mod transfer;

pub use endpoints::{Endpoint, Probe};
pub use error::Error;
pub use limit::Limiter;
pub use transfer::{Progress, Transferred, crc_of_file, partial_name};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

/// What a path segment keeps unescaped: everything but controls, space and
/// the characters URLs give meaning to. `/` stays, as ferry paths use it.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Escapes a ferry path (or a connection name) for a URL.
pub(crate) fn escape(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

/// Ranges a file of several parts is downloaded in, unless told otherwise.
pub const DEFAULT_STREAMS: usize = 4;

/// How many times a request is tried (on the endpoints in order) before
/// its error is returned.
const ATTEMPTS: usize = 4;

/// A client of one ferry network, as one account. (Its `Debug` leaves
/// the key out.)
pub struct Client {
    http: reqwest::Client,
    key: String,
    hub: url::Url,
    /// Where requests go, best first; the hub is always last.
    endpoints: Mutex<Vec<Endpoint>>,
    /// Whether the caller named the endpoint (no probing, no moving).
    fixed: bool,
    /// Ranges one file is downloaded in at most.
    streams: usize,
    /// Upload sessions one file is uploaded in at most.
    upload_streams: usize,
    /// The bytes per second all transfers share, if limited.
    limiter: Option<Arc<Limiter>>,
    /// When the endpoints were last ordered by probing.
    probed_at: Mutex<Option<std::time::Instant>>,
    /// How long that order is kept before a transfer probes again.
    reprobe_after: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hub", &self.hub.as_str())
            .field("key", &"…")
            .field("endpoints", &self.endpoints())
            .field("fixed", &self.fixed)
            .field("streams", &self.streams)
            .field("upload_streams", &self.upload_streams)
            .field("limiter", &self.limiter)
            .finish()
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Entry {
    /// The path in the connection.
    pub path: String,
    /// The last segment.
    pub name: String,
    /// `file` or `folder`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes (files).
    #[serde(default)]
    pub size: Option<u64>,
    /// Entity tag (files).
    #[serde(default)]
    pub etag: Option<String>,
    /// Last change, unix milliseconds (files).
    #[serde(default)]
    pub modified_at: Option<i64>,
    /// The checksums ferry knows (files written through ferry).
    #[serde(default)]
    pub checksums: Option<Checksums>,
}

/// Checksums of a file, as the API encodes them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Checksums {
    /// CRC64/NVME, base64 of its 8 bytes.
    #[serde(default)]
    pub crc64nvme: Option<String>,
}

/// A page of the account's activity feed.
#[derive(Debug, Clone, Deserialize)]
pub struct Events {
    /// The events, oldest first, as the API gives them.
    pub events: Vec<serde_json::Value>,
    /// Where to continue.
    pub next_cursor: String,
    /// Whether to ask again at once.
    pub has_more: bool,
}

impl Entry {
    /// Whether this is a folder.
    pub fn is_folder(&self) -> bool {
        self.kind == "folder"
    }
}

/// A page of a folder.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    /// The entries, in key order.
    pub entries: Vec<Entry>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

/// What `HEAD` says of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Bytes.
    pub size: u64,
    /// Entity tag.
    pub etag: Option<String>,
    /// The media type.
    pub content_type: Option<String>,
    /// The CRC64/NVME ferry knows, as the API encodes it.
    pub crc64nvme: Option<String>,
    /// `Last-Modified`.
    pub modified: Option<String>,
}

impl Client {
    /// A client of the network whose hub (or any node) is at `hub`,
    /// calling with API key `key`. Requests go to `hub` until
    /// [`Client::choose_endpoint`] picks a spoke.
    pub fn new(hub: url::Url, key: String) -> Result<Self, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            // A node that stops answering (its machine gone, a connection
            // queued forever) fails the request instead of hanging it.
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        Ok(Self {
            http,
            key,
            endpoints: Mutex::new(vec![Endpoint::hub(hub.clone())]),
            hub,
            fixed: false,
            streams: DEFAULT_STREAMS,
            upload_streams: 1,
            limiter: None,
            probed_at: Mutex::new(None),
            reprobe_after: endpoints::REPROBE_AFTER,
        })
    }

    /// Downloads each file of several parts in up to `streams` ranges at
    /// once (1: one after the other).
    pub fn with_streams(mut self, streams: usize) -> Self {
        self.streams = streams.max(1);
        self
    }

    /// Uploads each file of several parts in up to `streams` sessions at
    /// once, joined at the end (tus concatenation). One by default: the
    /// node joining them reads and writes the file once more (on a folder
    /// provider, a copy of it), which costs more than a second stream
    /// gains unless one stream cannot fill the link (a long path).
    pub fn with_upload_streams(mut self, streams: usize) -> Self {
        self.upload_streams = streams.max(1);
        self
    }

    /// Keeps the order a probe found for `after` before a transfer probes
    /// again (default five minutes).
    pub fn with_reprobe_after(mut self, after: Duration) -> Self {
        self.reprobe_after = after;
        self
    }

    /// Shares one budget of `bytes_per_sec` among all of this client's
    /// transfers, up and down.
    pub fn with_bwlimit(mut self, bytes_per_sec: u64) -> Self {
        self.limiter = Some(Arc::new(Limiter::new(bytes_per_sec)));
        self
    }

    /// Sends every request to `url`, whatever the probes would say.
    pub fn with_endpoint(mut self, url: url::Url) -> Self {
        self.endpoints = Mutex::new(vec![Endpoint::named("given", url)]);
        self.fixed = true;
        self
    }

    /// The endpoints in the order requests try them.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.lock().expect("endpoints poisoned").clone()
    }

    /// The endpoint requests go to first.
    pub fn current(&self) -> Endpoint {
        self.endpoints.lock().expect("endpoints poisoned")[0].clone()
    }

    /// Moves the endpoint `failed` belongs to (its base, or any URL below
    /// it) behind the others; returns whether another endpoint is left to
    /// try.
    pub(crate) fn demote(&self, failed: &url::Url) -> bool {
        let mut e = self.endpoints.lock().expect("endpoints poisoned");
        if let Some(i) = e
            .iter()
            .position(|x| failed.as_str().starts_with(x.base.as_str()))
        {
            let gone = e.remove(i);
            e.push(gone);
        }
        e.len() > 1
    }

    fn url(&self, base: &url::Url, path_and_query: &str) -> Result<url::Url, Error> {
        base.join(path_and_query.trim_start_matches('/'))
            .map_err(|e| Error::Usage(format!("bad URL: {e}")))
    }

    /// Sends a request built by `build` for each attempt, moving to the
    /// next endpoint when one cannot be reached or answers 502/503/504,
    /// and waiting what `Retry-After` asks (at most 30 s) on 429/503.
    /// Other answers, errors included, are returned as they are.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            let base = self.current().base;
            let url = self.url(&base, path_and_query)?;
            let req = build(
                self.http
                    .request(method.clone(), url)
                    .bearer_auth(&self.key),
            );
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry = retry_after(&resp);
                    let passing = matches!(
                        status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                            | StatusCode::TOO_MANY_REQUESTS
                    );
                    if !passing || attempt + 1 == ATTEMPTS {
                        return Ok(resp);
                    }
                    last = Some(Error::from_response(resp).await);
                    if status != StatusCode::TOO_MANY_REQUESTS && !self.fixed {
                        self.demote(&base);
                    }
                    tokio::time::sleep(retry.unwrap_or(backoff(attempt))).await;
                }
                Err(e) => {
                    last = Some(Error::Transport(format!("{base}: {}", error_chain(&e))));
                    if self.fixed || !self.demote(&base) {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Transport("no attempt was made".into())))
    }

    /// Sends and fails on any answer but a success.
    pub(crate) async fn ok(
        &self,
        method: Method,
        path_and_query: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let resp = self.send(method, path_and_query, build).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(Error::from_response(resp).await)
        }
    }

    /// One page of folder `dir` (`""` for the top) of connection `conn`.
    pub async fn list(
        &self,
        conn: &str,
        dir: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, Error> {
        let mut q = format!(
            "/v1/connections/{}/list/{}?limit={limit}",
            escape(conn),
            escape(dir.trim_matches('/'))
        );
        if let Some(c) = cursor {
            q.push_str("&cursor=");
            q.push_str(&escape(c));
        }
        let resp = self.ok(Method::GET, &q, |r| r).await?;
        read_json(resp, "the listing").await
    }

    /// Every entry below `dir`, page by page; with `recursive`, the
    /// folders' entries too (depth first, in key order).
    pub async fn walk(&self, conn: &str, dir: &str, recursive: bool) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        let mut stack = vec![dir.trim_matches('/').to_owned()];
        while let Some(d) = stack.pop() {
            let mut cursor: Option<String> = None;
            let mut folders = Vec::new();
            loop {
                let page = self.list(conn, &d, cursor.as_deref(), 1000).await?;
                for e in page.entries {
                    if recursive && e.is_folder() {
                        folders.push(e.path.clone());
                    }
                    out.push(e);
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            stack.extend(folders.into_iter().rev());
        }
        Ok(out)
    }

    /// What `HEAD` says of file `path`; `None` when there is none.
    pub async fn stat(&self, conn: &str, path: &str) -> Result<Option<Stat>, Error> {
        let resp = self
            .send(Method::HEAD, &file_path(conn, path), |r| r)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(Error::from_response(resp).await);
        }
        let h = resp.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // (A HEAD answer's body is empty: its length is the header's.)
        let size = text("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Transport("the answer has no Content-Length".into()))?;
        Ok(Some(Stat {
            size,
            etag: text("etag"),
            content_type: text("content-type"),
            crc64nvme: text(ferry_common::checksum::CRC64NVME_HEADER),
            modified: text("last-modified"),
        }))
    }

    /// Deletes file `path`.
    pub async fn delete(&self, conn: &str, path: &str) -> Result<(), Error> {
        self.ok(Method::DELETE, &file_path(conn, path), |r| r)
            .await
            .map(drop)
    }

    /// Deletes folder `path` with everything in it; how many files went.
    pub async fn delete_folder(&self, conn: &str, path: &str) -> Result<u64, Error> {
        let q = format!(
            "/v1/connections/{}/folders/{}?recursive=true",
            escape(conn),
            escape(path.trim_matches('/'))
        );
        let resp = self.ok(Method::DELETE, &q, |r| r).await?;
        let answer: serde_json::Value = read_json(resp, "the deletion's answer").await?;
        Ok(answer["deleted_files"].as_u64().unwrap_or(0))
    }

    /// Makes folder `path` (and its parents); succeeds if it is there.
    pub async fn mkdir(&self, conn: &str, path: &str) -> Result<(), Error> {
        let q = format!(
            "/v1/connections/{}/folders/{}",
            escape(conn),
            escape(path.trim_matches('/'))
        );
        self.ok(Method::POST, &q, |r| r).await.map(drop)
    }

    /// Copies (`moving`: moves) file `from` to `to` within `conn`.
    pub async fn copy_within(
        &self,
        conn: &str,
        from: &str,
        to: &str,
        overwrite: bool,
        moving: bool,
    ) -> Result<(), Error> {
        let q = format!(
            "/v1/connections/{}/{}",
            escape(conn),
            if moving { "move" } else { "copy" }
        );
        let body = serde_json::to_vec(&serde_json::json!({
            "from": from.trim_start_matches('/'),
            "to": to.trim_start_matches('/'),
            "overwrite": overwrite,
        }))
        .unwrap_or_default();
        self.ok(Method::POST, &q, |r| {
            r.header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
        .map(drop)
    }

    /// A page of the activity feed after `cursor` (from the start without).
    pub async fn events(&self, cursor: Option<&str>, limit: usize) -> Result<Events, Error> {
        let mut q = format!("/v1/events?limit={limit}");
        if let Some(c) = cursor {
            q.push_str("&cursor=");
            q.push_str(&escape(c));
        }
        let resp = self.ok(Method::GET, &q, |r| r).await?;
        read_json(resp, "the events").await
    }

    /// The spokes to probe, as the hub lists them.
    pub async fn probe_targets(&self) -> Result<Vec<(String, url::Url)>, Error> {
        #[derive(Deserialize)]
        struct Target {
            spoke: String,
            url: String,
        }
        #[derive(Deserialize)]
        struct Targets {
            targets: Vec<Target>,
        }
        let url = self.url(&self.hub, "/v1/spokes/probe-targets")?;
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| Error::Transport(format!("{}: {}", self.hub, error_chain(&e))))?;
        if !resp.status().is_success() {
            return Err(Error::from_response(resp).await);
        }
        let t: Targets = read_json(resp, "the probe targets").await?;
        Ok(t.targets
            .into_iter()
            .filter_map(|t| url::Url::parse(&t.url).ok().map(|u| (t.spoke, u)))
            .collect())
    }
}

/// Reads a JSON answer.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    what: &str,
) -> Result<T, Error> {
    let body = resp
        .bytes()
        .await
        .map_err(|e| Error::Transport(format!("{what} did not arrive: {}", error_chain(&e))))?;
    serde_json::from_slice(&body).map_err(|e| Error::Transport(format!("{what} did not read: {e}")))
}

/// The URL path of a file.
pub(crate) fn file_path(conn: &str, path: &str) -> String {
    format!(
        "/v1/connections/{}/files/{}",
        escape(conn),
        escape(path.trim_start_matches('/'))
    )
}

pub(crate) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(30)))
}

/// 200 ms, 400 ms, 800 ms… up to 6.4 s.
pub(crate) fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(200 << attempt.min(5))
}

/// An error with its causes, which say what actually went wrong
/// ("connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
