//! WebDAV uploads that stream.
//!
//! OpenDAL 0.59's WebDAV writer is one-shot: it collects the whole object
//! and sends it in one `PUT` when the writer closes, so ferry had to hold a
//! WebDAV upload whole in memory. This layer replaces WebDAV's writer with
//! one that streams: the first write starts a `PUT` of a temporary name in
//! the connection's staging folder ([`STAGING_DIR`]) whose body is fed, one
//! buffer at a time, through a channel of one slot, so an upload holds no
//! more than the upload budget's chunks ([`crate::content::budget`]).
//! Closing the writer ends the body, waits for the server's answer and
//! `MOVE`s the temporary name into place (WebDAV's rename, `Overwrite: T`);
//! aborting it cuts the request and deletes the temporary name. A failed or
//! abandoned upload never leaves a half object under the real name.
//!
//! Requests go through the same client, and the same address checks, as
//! the rest of the operator's ([`super::egress`]); the server's answer to a
//! failed `PUT` is noted for the problem it becomes ([`super::answer`]) and
//! logged, never passed on.

use std::sync::Arc;

use bytes::Bytes;
use opendal::raw::oio;
use opendal::raw::{
    Layer, OpCompose, OpCopy, OpCreateDir, OpList, OpPresign, OpRead, OpRename, OpRestore, OpStat,
    OpWrite, RpCreateDir, RpPresign, RpRename, RpRestore, RpStat, Service, ServiceInfo, Servicer,
    build_rooted_abs_path, percent_encode_path,
};
use opendal::{Buffer, Capability, ErrorKind, Metadata, MetadataBuilder, OperationContext};
use tokio::sync::mpsc;

use super::answer::{FailedAnswer, note};
use super::egress;
use super::endpoint::EndpointPolicy;
use crate::path::STAGING_DIR;

/// How long an abandoned upload's request may take to finish before it is
/// cut.
const ABANDON_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Attempts at deleting an abandoned upload's temporary name while the
/// server says it is locked (50 ms, doubling: about 3 s in all).
const DISCARD_ATTEMPTS: u32 = 7;

/// Where and how a connection's uploads are sent.
#[derive(Debug)]
struct Server {
    /// The endpoint, as checked, without a trailing `/`.
    endpoint: String,
    /// The `Authorization` header value, if any.
    authorization: Option<String>,
    /// The client of the connection's endpoint policy.
    client: reqwest::Client,
    /// Whether internal addresses are allowed.
    policy: EndpointPolicy,
}

/// The layer giving a WebDAV operator streaming uploads.
#[derive(Debug, Clone)]
pub struct StreamingUploads(Arc<Server>);

impl StreamingUploads {
    /// Streaming uploads to `endpoint` (checked, no trailing `/`), with
    /// `authorization` and the client of `policy`.
    pub fn new(endpoint: String, authorization: Option<String>, policy: EndpointPolicy) -> Self {
        Self(Arc::new(Server {
            endpoint,
            authorization,
            client: egress::client(policy),
            policy,
        }))
    }
}

/// The `Authorization` header of a WebDAV configuration: basic with a
/// username (and password), or a bearer token.
pub fn authorization(
    username: Option<&str>,
    password: Option<&str>,
    token: Option<&str>,
) -> Option<String> {
    use base64::Engine as _;
    match (username, token) {
        (Some(user), _) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", password.unwrap_or_default()))
        )),
        (None, Some(token)) => Some(format!("Bearer {token}")),
        (None, None) => None,
    }
}

impl Layer for StreamingUploads {
    fn apply_service(&self, inner: Servicer) -> Servicer {
        Arc::new(StreamingService {
            inner,
            server: self.0.clone(),
        })
    }
}

/// WebDAV's service with its writer replaced; everything else is passed
/// to the service it wraps.
#[derive(Debug)]
struct StreamingService {
    inner: Servicer,
    server: Arc<Server>,
}

impl Service for StreamingService {
    type Reader = oio::Reader;
    type Writer = oio::Writer;
    type Lister = oio::Lister;
    type Deleter = oio::Deleter;
    type Copier = oio::Copier;
    type Composer = oio::Composer;

    fn info(&self) -> ServiceInfo {
        self.inner.info()
    }

    fn capability(&self) -> Capability {
        Capability {
            write_can_multi: true,
            write_can_empty: true,
            ..self.inner.capability()
        }
    }

    async fn create_dir(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpCreateDir,
    ) -> opendal::Result<RpCreateDir> {
        self.inner.create_dir(ctx, path, args).await
    }

    async fn stat(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpStat,
    ) -> opendal::Result<RpStat> {
        self.inner.stat(ctx, path, args).await
    }

    fn read(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpRead,
    ) -> opendal::Result<oio::Reader> {
        self.inner.read(ctx, path, args)
    }

    fn write(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpWrite,
    ) -> opendal::Result<oio::Writer> {
        Ok(Box::new(StreamingWriter {
            server: self.server.clone(),
            inner: self.inner.clone(),
            ctx: ctx.clone(),
            root: self.inner.info().root().to_string(),
            path: path.to_owned(),
            staged: format!("{STAGING_DIR}/{}.upload", random_name()),
            content_type: args.content_type().map(str::to_owned),
            put: None,
        }))
    }

    fn delete(&self, ctx: &OperationContext) -> opendal::Result<oio::Deleter> {
        self.inner.delete(ctx)
    }

    fn list(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpList,
    ) -> opendal::Result<oio::Lister> {
        self.inner.list(ctx, path, args)
    }

    fn copy(
        &self,
        ctx: &OperationContext,
        from: &str,
        to: &str,
        args: OpCopy,
    ) -> opendal::Result<oio::Copier> {
        self.inner.copy(ctx, from, to, args)
    }

    fn compose(
        &self,
        ctx: &OperationContext,
        to: &str,
        args: OpCompose,
    ) -> opendal::Result<oio::Composer> {
        self.inner.compose(ctx, to, args)
    }

    async fn rename(
        &self,
        ctx: &OperationContext,
        from: &str,
        to: &str,
        args: OpRename,
    ) -> opendal::Result<RpRename> {
        self.inner.rename(ctx, from, to, args).await
    }

    async fn restore(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpRestore,
    ) -> opendal::Result<RpRestore> {
        self.inner.restore(ctx, path, args).await
    }

    async fn presign(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpPresign,
    ) -> opendal::Result<RpPresign> {
        self.inner.presign(ctx, path, args).await
    }
}

/// A name no other upload uses: 128 random bits in hex.
fn random_name() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `PUT` under way: the sending half of its body, and the request.
#[derive(Debug)]
struct Put {
    body: mpsc::Sender<Result<Bytes, std::io::Error>>,
    answer: tokio::task::JoinHandle<Result<reqwest::Response, reqwest::Error>>,
}

/// A writer streaming into a temporary name, moved into place on close.
struct StreamingWriter {
    server: Arc<Server>,
    inner: Servicer,
    ctx: OperationContext,
    root: String,
    path: String,
    staged: String,
    content_type: Option<String>,
    put: Option<Put>,
}

/// An error of a streaming upload: not retried (its body cannot be sent
/// again), with its cause for the operator's log.
fn upload_error(
    kind: ErrorKind,
    message: &'static str,
    cause: impl std::fmt::Display,
) -> opendal::Error {
    opendal::Error::new(kind, message)
        .with_context("cause", super::failure::scrub(&cause.to_string()))
}

/// The error of a request that failed before an answer came.
fn request_error(err: &reqwest::Error) -> opendal::Error {
    if egress::is_refusal(err) {
        return egress::refused_error(err);
    }
    upload_error(
        ErrorKind::Unexpected,
        "the WebDAV upload request failed",
        err,
    )
}

/// The error of a failed answer to the upload: its status decides.
fn answer_error(status: reqwest::StatusCode) -> opendal::Error {
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::PermissionDenied,
        404 | 409 => ErrorKind::NotFound,
        412 => ErrorKind::ConditionNotMatch,
        429 => ErrorKind::RateLimited,
        _ => ErrorKind::Unexpected,
    };
    upload_error(kind, "the WebDAV server refused the upload", status)
}

impl StreamingWriter {
    /// The URL of `path` under the connection's root.
    fn url(&self, path: &str) -> Result<url::Url, opendal::Error> {
        let text = format!(
            "{}{}",
            self.server.endpoint,
            percent_encode_path(&build_rooted_abs_path(&self.root, path))
        );
        let url = url::Url::parse(&text)
            .map_err(|e| upload_error(ErrorKind::Unexpected, "the upload URL is invalid", e))?;
        if !self.server.policy.allow_private {
            egress::refuse_internal_literal(&url).map_err(egress::refused_error)?;
        }
        Ok(url)
    }

    /// A request to `path` with the connection's credentials.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, opendal::Error> {
        let mut req = self.server.client.request(method, self.url(path)?);
        if let Some(auth) = &self.server.authorization {
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        Ok(req)
    }

    /// Starts the `PUT` of the temporary name, its body still open.
    async fn start(&mut self) -> Result<&mut Put, opendal::Error> {
        if self.put.is_none() {
            self.inner
                .create_dir(&self.ctx, &format!("{STAGING_DIR}/"), OpCreateDir::new())
                .await?;
            let (body, rx) = mpsc::channel(1);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let mut req = self
                .request(reqwest::Method::PUT, &self.staged)?
                .body(reqwest::Body::wrap_stream(stream));
            if let Some(ct) = &self.content_type {
                req = req.header(http::header::CONTENT_TYPE, ct);
            }
            let answer = tokio::spawn(req.send());
            self.put = Some(Put { body, answer });
        }
        Ok(self.put.as_mut().expect("just started"))
    }

    /// Waits for the server's answer to the `PUT` (its body ended or
    /// abandoned) and checks it.
    async fn finish(put: Put) -> Result<(), opendal::Error> {
        let Put { body, answer } = put;
        drop(body);
        let resp = match answer.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(request_error(&e)),
            Err(e) => {
                return Err(upload_error(
                    ErrorKind::Unexpected,
                    "the WebDAV upload stopped",
                    e,
                ));
            }
        };
        let status = resp.status();
        note(FailedAnswer::of(status, resp.headers()));
        if status.is_success() {
            Ok(())
        } else {
            let text = resp.text().await.unwrap_or_default();
            tracing::warn!(
                status = status.as_u16(),
                answer = %super::failure::scrub(&text),
                "a WebDAV server refused an upload"
            );
            Err(answer_error(status))
        }
    }

    /// Deletes the temporary name, as far as it can: a server still busy
    /// with the request (`423 Locked`) is asked again a few times.
    async fn discard(&self) {
        let mut pause = std::time::Duration::from_millis(50);
        let mut attempt = 1;
        let deleted = loop {
            let deleted = match self.request(reqwest::Method::DELETE, &self.staged) {
                Ok(req) => req.send().await.map(|r| r.status()),
                Err(_) => return,
            };
            if attempt == DISCARD_ATTEMPTS || !matches!(deleted, Ok(reqwest::StatusCode::LOCKED)) {
                break deleted;
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        };
        match deleted {
            Ok(s) if s.is_success() || s == reqwest::StatusCode::NOT_FOUND => {}
            other => tracing::warn!(
                path = %self.staged,
                answer = ?other.map_err(|e| super::failure::scrub(&e.to_string())),
                "could not delete an abandoned WebDAV upload"
            ),
        }
    }
}

impl oio::Write for StreamingWriter {
    async fn write(&mut self, bs: Buffer) -> opendal::Result<()> {
        let put = self.start().await?;
        for chunk in bs {
            if put.body.send(Ok(chunk)).await.is_err() {
                // The request ended early: its answer says why.
                let put = self.put.take().expect("started");
                Self::finish(put).await?;
                return Err(upload_error(
                    ErrorKind::Unexpected,
                    "the WebDAV server answered before the upload was complete",
                    "early answer",
                ));
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> opendal::Result<Metadata> {
        self.start().await?;
        let put = self.put.take().expect("started");
        if let Err(e) = Self::finish(put).await {
            self.discard().await;
            return Err(e);
        }
        if let Err(e) = self
            .inner
            .rename(&self.ctx, &self.staged, &self.path, OpRename::new())
            .await
        {
            self.discard().await;
            return Err(e);
        }
        Ok(MetadataBuilder::file(0).build())
    }

    async fn abort(&mut self) -> opendal::Result<()> {
        if let Some(put) = self.put.take() {
            // End the body where it is: the server finishes the request with
            // what it got, under the temporary name, which is then deleted.
            // A server that does not answer in time has the request cut.
            let Put { body, mut answer } = put;
            drop(body);
            if tokio::time::timeout(ABANDON_WAIT, &mut answer)
                .await
                .is_err()
            {
                answer.abort();
            }
            self.discard().await;
        }
        Ok(())
    }
}
