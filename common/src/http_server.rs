//! The client-facing HTTP listener shared by the hub and the spoke.
//!
//! It accepts TCP connections (a permit is taken *before* `accept`, so the
//! connection limit is a real bound), performs the TLS handshake under a
//! timeout, speaks HTTP/1.1 or HTTP/2 (ALPN, or the h2 preface on plain
//! HTTP) and hands every request to one handler. Idle connections are closed;
//! on shutdown it stops accepting, lets in-flight requests finish within the
//! grace period and reports what it abandoned.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::body::{Body, boxed};

/// The address of the client that sent a request, set by the listener as a
/// request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// A request handler: the router of a daemon.
pub type Handler = Arc<
    dyn Fn(Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// The most connections open at once, changeable while serving: more
/// are allowed at once; fewer once enough connections have closed.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    target: Arc<std::sync::Mutex<usize>>,
}

impl ConnectionLimit {
    /// A limit of `n` connections.
    pub fn new(n: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(n)),
            target: Arc::new(std::sync::Mutex::new(n)),
        }
    }

    /// The limit now.
    pub fn get(&self) -> usize {
        *self.target.lock().expect("limit poisoned")
    }

    /// Sets the limit to `n` (at least 1). Lowering it waits, in a task
    /// of the runtime, for connections to close; none is cut.
    pub fn set(&self, n: usize) {
        let n = n.max(1);
        let mut target = self.target.lock().expect("limit poisoned");
        if n > *target {
            self.permits.add_permits(n - *target);
        } else if n < *target {
            let fewer = u32::try_from(*target - n).unwrap_or(u32::MAX);
            let permits = self.permits.clone();
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(fewer).await {
                    p.forget();
                }
            });
        }
        *target = n;
    }
}

/// Limits on the listener, from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once; further clients wait in the backlog.
    pub connections: ConnectionLimit,
    /// Largest request head (request line and header fields) accepted.
    pub max_header_bytes: usize,
    /// A connection with no bytes moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Told the kernel's round-trip time of client connections (a spoke's
    /// steering samples); `None` samples nothing.
    pub rtt_sink: Option<RttSink>,
}

/// Receives `(client address, kernel RTT)` of each accepted connection,
/// read when it is accepted: the round trip of its TCP handshake.
#[derive(Clone)]
pub struct RttSink(pub Arc<dyn Fn(IpAddr, Duration) + Send + Sync>);

impl std::fmt::Debug for RttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RttSink")
    }
}

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

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    limits: &Limits,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(boxed);
        req.extensions_mut().insert(ClientAddr(peer));
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes.max(8192))
        .header_read_timeout(limits.idle_timeout);
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
                    let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
                    drive(builder.serve_connection(io, service), &shutdown).await
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
            let io = TokioIo::new(IdleTimeout::new(tcp, limits.idle_timeout));
            drive(builder.serve_connection(io, service), &shutdown).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Runs a connection to its end, asking it to finish gracefully on shutdown.
async fn drive<I, S, B>(
    conn: auto::Connection<'_, I, S, TokioExecutor>,
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
        res = conn.as_mut() => res,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// A stream that fails with `TimedOut` when no bytes move for a while.
struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(res) => {
                this.touch();
                Poll::Ready(res)
            }
            Poll::Pending => {
                this.check(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(res) => {
                this.touch();
                Poll::Ready(res)
            }
            Poll::Pending => {
                this.check(cx)?;
                Poll::Pending
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        this.touch();
        Poll::Ready(res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_connection_limit_grows_at_once_and_shrinks_as_connections_close() {
        let limit = ConnectionLimit::new(2);
        let a = limit.permits.clone().acquire_owned().await.unwrap();
        let b = limit.permits.clone().acquire_owned().await.unwrap();
        assert_eq!(limit.permits.available_permits(), 0);
        limit.set(3);
        assert_eq!(limit.get(), 3);
        assert_eq!(limit.permits.available_permits(), 1);
        // Down to 1 while three are allowed and two held: nothing is cut;
        // the permits go as connections close.
        limit.set(1);
        assert_eq!(limit.get(), 1);
        drop(a);
        drop(b);
        for _ in 0..100 {
            if limit.permits.available_permits() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(limit.permits.available_permits(), 1);
        limit.set(0);
        assert_eq!(limit.get(), 1, "never below one");
    }
}
