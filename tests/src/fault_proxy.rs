//! A test-only HTTP proxy between ferry and a storage server that misbehaves
//! on command: answers 503 with `Retry-After` (or another error status),
//! delays requests, and cuts a connection in the middle of a request or
//! response body. Its error answers carry [`MARKER`] in their body and a
//! header, and [`REQUEST_ID`] as the provider's request id, so a test can
//! tell whether any of them reached a client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Text in the body and in a header of every error the proxy answers;
/// ferry must never show it to a client.
pub const MARKER: &str = "FAULT-PROXY-MARKER-7f3a";
/// The provider request id (`x-amz-request-id`) of the proxy's errors.
pub const REQUEST_ID: &str = "FAULTPROXYREQ0001";
type ProxyBody = BoxBody<Bytes, BoxError>;

#[derive(Debug, Default)]
struct Faults {
    /// Requests still to answer 503.
    fail: AtomicUsize,
    /// The `Retry-After` of those answers.
    retry_after: AtomicU64,
    /// Their status (503 unless told otherwise).
    status: AtomicU64,
    /// Added before forwarding each request, milliseconds.
    delay_ms: AtomicU64,
    /// Cut the next response with a body after this many bytes.
    cut_response: Mutex<Option<usize>>,
    /// Cut the next request with a body after this many bytes.
    cut_request: Mutex<Option<usize>>,
    /// Requests of this method wait this long (milliseconds) first.
    delay_for: Mutex<Option<(http::Method, u64)>>,
    /// Answers to requests of this method wait this long (milliseconds)
    /// after the server gave them.
    hold_for: Mutex<Option<(http::Method, u64)>>,
    /// Wakes the answers held when holding stops.
    released: tokio::sync::Notify,
    /// Each piece of a response body waits this long (microseconds).
    throttle_us: AtomicU64,
    /// Requests of this method to let pass, then how many to fail (503).
    fail_after: Mutex<Option<(http::Method, usize, usize)>>,
    /// Requests seen.
    seen: AtomicUsize,
    /// Faults injected.
    injected: AtomicUsize,
}

/// A running proxy on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where ferry is pointed.
    pub addr: SocketAddr,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy forwarding to `upstream`, passing everything through until
    /// told otherwise.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, upstream)
    }

    /// The same on a listener bound already (so that its address can be
    /// given to the upstream before the proxy starts).
    pub fn start_on(listener: tokio::net::TcpListener, upstream: SocketAddr) -> FaultProxy {
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let client: Client<HttpConnector, ProxyBody> =
            Client::builder(TokioExecutor::new()).build_http();
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (faults, client) = (shared.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, upstream, faults.clone(), client.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        FaultProxy { addr, faults, task }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` requests `503 Service Unavailable` with
    /// `Retry-After: retry_after_secs`, without forwarding them.
    pub fn fail_next(&self, n: usize, retry_after_secs: u64) {
        self.answer_next(n, 503, retry_after_secs);
    }

    /// Answers the next `n` requests with `status` and `Retry-After:
    /// retry_after_secs`, without forwarding them.
    pub fn answer_next(&self, n: usize, status: u16, retry_after_secs: u64) {
        self.faults
            .retry_after
            .store(retry_after_secs, Ordering::SeqCst);
        self.faults
            .status
            .store(u64::from(status), Ordering::SeqCst);
        self.faults.fail.store(n, Ordering::SeqCst);
    }

    /// Holds every request this long before forwarding it.
    pub fn delay(&self, d: Duration) {
        self.faults
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Cuts the connection of the next response with a body after `n`
    /// bytes of it.
    pub fn cut_next_response_after(&self, n: usize) {
        *self.faults.cut_response.lock().unwrap() = Some(n);
    }

    /// Holds every request of `method` for `d` before it goes on (other
    /// methods pass at once).
    pub fn delay_method(&self, method: http::Method, d: Duration) {
        *self.faults.delay_for.lock().unwrap() = Some((method, d.as_millis() as u64));
    }

    /// Holds the answer to every request of `method` for `d` after the
    /// server gave it: the server has done what was asked, ferry does not
    /// know yet.
    pub fn hold_answers(&self, method: http::Method, d: Duration) {
        *self.faults.hold_for.lock().unwrap() = Some((method, d.as_millis() as u64));
    }

    /// Stops holding answers.
    pub fn release_answers(&self) {
        *self.faults.hold_for.lock().unwrap() = None;
        self.faults.released.notify_waiters();
    }

    /// Holds each piece of every response body for `d`, so that a large
    /// body takes a while and something can happen in its middle.
    pub fn throttle_responses(&self, d: Duration) {
        self.faults
            .throttle_us
            .store(d.as_micros() as u64, Ordering::SeqCst);
    }

    /// Lets the next `skip` requests of `method` through, then answers the
    /// `n` after them `503` (other methods pass).
    pub fn fail_after(&self, method: http::Method, skip: usize, n: usize) {
        *self.faults.fail_after.lock().unwrap() = Some((method, skip, n));
    }

    /// Cuts the connection of the next request with a body once `n` bytes
    /// of it have arrived.
    pub fn cut_next_request_after(&self, n: usize) {
        *self.faults.cut_request.lock().unwrap() = Some(n);
    }

    /// Requests seen, and faults injected, so far.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.faults.seen.load(Ordering::SeqCst),
            self.faults.injected.load(Ordering::SeqCst),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(status: u16, retry_after: u64) -> http::Response<ProxyBody> {
    let code = if status == 403 {
        "AccessDenied"
    } else {
        "ServiceUnavailable"
    };
    let body = http_body_util::Full::new(Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test's fault proxy {MARKER}</Message><RequestId>{REQUEST_ID}</RequestId></Error>"
    )))
    .map_err(|never| match never {})
    .boxed();
    http::Response::builder()
        .status(status)
        .header("retry-after", retry_after.to_string())
        .header("content-type", "application/xml")
        .header("x-amz-request-id", REQUEST_ID)
        .header("x-fault-marker", MARKER)
        .body(body)
        .unwrap()
}

async fn handle(
    req: http::Request<Incoming>,
    upstream: SocketAddr,
    faults: Arc<Faults>,
    client: Client<HttpConnector, ProxyBody>,
) -> Result<http::Response<ProxyBody>, BoxError> {
    faults.seen.fetch_add(1, Ordering::SeqCst);
    let delay = faults.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let held = match faults.delay_for.lock().unwrap().as_ref() {
        Some((method, ms)) if method == req.method() => *ms,
        _ => 0,
    };
    if held > 0 {
        tokio::time::sleep(Duration::from_millis(held)).await;
    }
    let counted_out = match faults.fail_after.lock().unwrap().as_mut() {
        Some((method, skip, n)) if method == req.method() => {
            if *skip > 0 {
                *skip -= 1;
                false
            } else if *n > 0 {
                *n -= 1;
                faults.status.store(503, Ordering::SeqCst);
                true
            } else {
                false
            }
        }
        _ => false,
    };
    if counted_out
        || faults
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        faults.injected.fetch_add(1, Ordering::SeqCst);
        // Read the body first, so the client sees the answer, not a reset.
        let _ = req.into_body().collect().await;
        let status = u16::try_from(faults.status.load(Ordering::SeqCst)).unwrap_or(503);
        return Ok(full(status, faults.retry_after.load(Ordering::SeqCst)));
    }
    let has_body = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0");
    let cut_request = if has_body {
        faults.cut_request.lock().unwrap().take()
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();
    if let Some(limit) = cut_request {
        faults.injected.fetch_add(1, Ordering::SeqCst);
        let mut body = body;
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen >= limit {
                break;
            }
        }
        // An error from the service makes hyper drop the connection.
        return Err("cut by the fault proxy in the middle of the request body".into());
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = format!("http://{upstream}{path}").parse()?;
    // A HEAD answer has no body, whatever its length says.
    let head = parts.method == http::Method::HEAD;
    let hold = match faults.hold_for.lock().unwrap().as_ref() {
        Some((method, ms)) if *method == parts.method => *ms,
        _ => 0,
    };
    let forwarded = http::Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    let resp = client.request(forwarded).await?;
    if hold > 0 {
        // Waiting for the release from before the hold is counted, so a
        // release right after the count is not missed.
        let released = faults.released.notified();
        faults.injected.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(hold)) => {}
            () = released => {}
        }
    }
    let (parts, body) = resp.into_parts();
    let has_body = !head
        && parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v != "0");
    let cut = if has_body {
        faults.cut_response.lock().unwrap().take()
    } else {
        None
    };
    let throttle = faults.throttle_us.load(Ordering::SeqCst);
    let body: ProxyBody = match cut {
        None if throttle > 0 => {
            let stream = body.into_data_stream().then(move |item| async move {
                tokio::time::sleep(Duration::from_micros(throttle)).await;
                item.map(Frame::data).map_err(BoxError::from)
            });
            http_body_util::BodyExt::boxed(StreamBody::new(stream))
        }
        None => body.map_err(BoxError::from).boxed(),
        Some(limit) => {
            faults.injected.fetch_add(1, Ordering::SeqCst);
            let mut left = limit;
            let stream = body.into_data_stream().map(move |item| {
                let data = item.map_err(BoxError::from)?;
                if left == 0 {
                    return Err::<Frame<Bytes>, BoxError>("cut by the fault proxy".into());
                }
                let take = data.len().min(left);
                left -= take;
                Ok(Frame::data(data.slice(..take)))
            });
            http_body_util::BodyExt::boxed(StreamBody::new(stream))
        }
    };
    Ok(http::Response::from_parts(parts, body))
}
