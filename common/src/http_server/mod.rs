//! The client-facing HTTP listener shared by the hub and the spoke.
//!
//! It accepts TCP connections (a permit is taken *before* `accept`, so the
//! connection limit is a real bound, and a source that holds its share of
//! connections has the next one closed at once), performs the TLS
//! handshake under a timeout, speaks HTTP/1.1 or HTTP/2 (ALPN, or the h2
//! preface on plain HTTP) and hands every request to one handler. A
//! connection with no request in flight for the idle timeout is closed
//! gracefully, whatever keep-alive pings do ([`activity`]); one that moves
//! no bytes in the middle of a request is cut ([`stall`]). On shutdown it
//! stops accepting, lets in-flight requests finish within the grace period
//! and reports what it abandoned.

mod activity;
mod limits;
mod linger;
mod stall;

pub use limits::{ConnectionLimit, Limits, RttSink};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::body::{Body, boxed};
use activity::{Activity, InFlightBody};
use stall::StallTimeout;

/// How long a connection closed for idleness gets to say goodbye (an
/// HTTP/2 GOAWAY and its ping) with nothing in flight, before it is
/// dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The address of the client that sent a request, set by the listener as a
/// request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// A request handler: the router of a daemon.
pub type Handler = Arc<
    dyn Fn(Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// Serves HTTP on `listener` until `shutdown` fires, then drains.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let permits = limits.connections.permits.clone();
    let tracker = TaskTracker::new();
    let mut accept_backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            res = listener.accept() => match res {
                Ok(pair) => { accept_backoff = Duration::from_millis(5); pair }
                Err(e) => {
                    // Usually out of file descriptors: wait, do not spin.
                    tracing::warn!(error = %e, backoff_ms = accept_backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(accept_backoff).await;
                    accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Some(source_slot) = limits.per_source.admit(peer.ip()) else {
            // Closed at once, freeing the permit: the other sources'
            // connections, and the load balancer's health checks, go on.
            tracing::debug!(client.addr = %peer, max = limits.per_source.get(), "refused a connection: its source holds its share");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let span = tracing::debug_span!("conn", client.addr = %peer);
        let (tls, limits, handler, shutdown) = (
            tls.clone(),
            limits.clone(),
            handler.clone(),
            shutdown.clone(),
        );
        tracker.spawn(
            async move {
                serve_connection(tcp, peer, tls, &limits, handler, shutdown).await;
                drop(source_slot);
                drop(permit);
            }
            .instrument(span),
        );
    }
    // Close the listening socket at once: new clients are refused (and go to
    // another node) instead of waiting in the backlog while we drain.
    drop(listener);
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            grace_secs = limits.shutdown_grace.as_secs(),
            "draining open connections"
        );
    }
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tracker.len(),
            "abandoned connections still open after the grace period"
        );
    }
}

/// The bytes of an HTTP/1 request head as sent: the request line and
/// every header field with its separators.
fn head_bytes<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri
            .authority()
            .map_or(0, |a| a.as_str().len() + "https://".len());
    // " " after the method, " HTTP/1.1\r\n" after the target.
    let line = req.method().as_str().len() + target + 11;
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    limits: &Limits,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let activity = Activity::new();
    let requests = activity.clone();
    let max_head = limits.max_header_bytes;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = requests.begin();
        // HTTP/1's read buffer may be larger than the head limit, where
        // hyper would stop a head (`api.read_buffer_bytes`): the limit is
        // held here.
        let too_large = (req.version() <= http::Version::HTTP_11)
            .then(|| head_bytes(&req))
            .filter(|&n| n > max_head);
        // An HTTP/1 body its handler leaves unread is read on, so that the
        // client sees the answer (HTTP/2 ends only the stream).
        let (mut req, awaited_body, sending) = if req.version() <= http::Version::HTTP_11 {
            let expects_continue = req
                .headers()
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let (parts, body) = req.into_parts();
            let body = linger::Lingering::new(body, expects_continue);
            let awaited = expects_continue.then(|| body.ended());
            // A request with a body: whether it ends before the answer
            // (below), and what to say if not.
            let sending = (!http_body::Body::is_end_stream(&body))
                .then(|| (body.ended(), parts.method.clone(), parts.uri.clone()));
            (Request::from_parts(parts, boxed(body)), awaited, sending)
        } else {
            (req.map(boxed), None, None)
        };
        req.extensions_mut().insert(ClientAddr(peer));
        let fut = match too_large {
            None => handler(req),
            Some(n) => {
                let problem = crate::problem::Problem::new(
                    crate::problem::ErrorCode::HeadersTooLarge,
                    format!(
                        "the request line and header fields take {n} bytes; at most {max_head} are accepted"
                    ),
                );
                Box::pin(async move { problem.into_response() })
            }
        };
        async move {
            let mut resp = fut.await;
            // An answer (usually a refusal) while the client is still
            // sending its body: the client sees it once its body is read
            // on (`linger`), or a reset if it does not end in time. Said,
            // so that a client's reset can be told from its cause.
            if let Some((ended, method, uri)) = sending
                && !ended.load(std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!(
                    status = resp.status().as_u16(),
                    method = %method,
                    path = %uri.path(),
                    "answered before the request's body ended; the rest is read and discarded"
                );
            }
            // Answered before a body the client was to send after
            // `100 Continue`: whether it sends it now is the client's
            // choice, so the connection cannot carry another request.
            if awaited_body.is_some_and(|ended| !ended.load(std::sync::atomic::Ordering::Relaxed)) {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(resp.map(|body| InFlightBody::new(body, in_flight)))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes.max(limits.read_buffer_bytes))
        .header_read_timeout(limits.idle_timeout);
    // Pings find dead peers; they do not keep a connection open (idleness
    // counts requests).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(Duration::from_secs(20));
    // The kernel measured the handshake's round trip: steering's sample.
    if let Some(sink) = &limits.rtt_sink
        && let Some(rtt) = crate::tcp_rtt::kernel_rtt(&tcp)
    {
        (sink.0)(peer.ip(), rtt);
    }
    let result = match tls {
        Some(acceptor) => {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let io = TokioIo::new(StallTimeout::new(stream, limits.idle_timeout));
                    let conn = builder.serve_connection(io, service);
                    drive(conn, &activity, limits.idle_timeout, &shutdown).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            }
        }
        None => {
            let io = TokioIo::new(StallTimeout::new(tcp, limits.idle_timeout));
            let conn = builder.serve_connection(io, service);
            drive(conn, &activity, limits.idle_timeout, &shutdown).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Runs a connection to its end, asking it to finish gracefully on
/// shutdown or once no request has been in flight for `idle_timeout`.
async fn drive<I, S, B>(
    conn: auto::Connection<'_, I, S, TokioExecutor>,
    activity: &Activity,
    idle_timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            return conn.await;
        }
        _ = activity.idle_for(idle_timeout, tokio::time::Instant::now()) => {}
    }
    tracing::debug!(
        idle_secs = idle_timeout.as_secs(),
        "closing a connection with no request in flight"
    );
    conn.as_mut().graceful_shutdown();
    // A request that raced the close may still finish; a peer that keeps
    // the connection without one is dropped.
    tokio::select! {
        res = conn.as_mut() => res,
        _ = activity.idle_for(IDLE_CLOSE_GRACE, tokio::time::Instant::now()) => Ok(()),
    }
}

/// The first SIGTERM or SIGINT cancels `shutdown` (a graceful drain); a
/// second one exits the process at once.
pub async fn wait_for_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests (signal again to exit now)");
    crate::systemd::stopping();
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting without waiting");
    std::process::exit(130);
}
