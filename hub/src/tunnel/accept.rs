//! The tunnel listeners' accept loops. Each takes a permit before it
//! accepts (at most `tunnel.max_tunnels` tunnels, handshakes included, on
//! each transport), backs off when accepting fails, runs the transport's
//! handshake under a timeout, and finds the spoke the client certificate
//! belongs to before the session starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_common::link::{H2Recv, H2Send, RecvHalf, SendHalf};
use ferry_common::tunnel_io::close;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::allowed::AllowedPublic;
use super::session::{Acceptor, session};
use super::{PeerLink, Registry};
use crate::api::AppState;
use crate::config::TunnelConfig;
use crate::metrics::TunnelRefusal;

/// How long a transport handshake, and then the hello, may take.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a tunnel shares with the hub.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) state: Arc<AppState>,
    pub(super) registry: Arc<Registry>,
    pub(super) cfg: TunnelConfig,
    pub(super) shutdown: CancellationToken,
}

impl Ctx {
    fn new(
        state: Arc<AppState>,
        registry: Arc<Registry>,
        cfg: TunnelConfig,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            state,
            registry,
            cfg,
            shutdown,
        }
    }

    /// Waits for room for one more tunnel; `None` once shutting down.
    async fn permit(&self, permits: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            _ = self.shutdown.cancelled() => None,
            p = permits.clone().acquire_owned() => Some(p.expect("the semaphore is never closed")),
        }
    }
}

/// Accepts QUIC tunnels until `shutdown`, then closes the endpoint.
pub async fn serve_quic(
    endpoint: quinn::Endpoint,
    state: Arc<AppState>,
    registry: Arc<Registry>,
    cfg: TunnelConfig,
    shutdown: CancellationToken,
) {
    let ctx = Ctx::new(state, registry, cfg, shutdown);
    let permits = Arc::new(Semaphore::new(ctx.cfg.max_tunnels));
    let tracker = TaskTracker::new();
    while let Some(permit) = ctx.permit(&permits).await {
        let incoming = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            quic_tunnel(incoming, ctx).await;
            drop(permit);
        });
    }
    endpoint.close(close::SHUTDOWN.into(), b"hub shutting down");
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
}

/// Accepts TLS-over-TCP tunnels (for spokes whose UDP is blocked) until
/// `shutdown`.
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    registry: Arc<Registry>,
    cfg: TunnelConfig,
    shutdown: CancellationToken,
) {
    let ctx = Ctx::new(state, registry, cfg, shutdown);
    let permits = Arc::new(Semaphore::new(ctx.cfg.max_tunnels));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(5);
    while let Some(permit) = ctx.permit(&permits).await {
        let (tcp, remote) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: wait, do not spin.
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "tunnel accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        let _ = tcp.set_nodelay(true);
        let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
        tracker.spawn(async move {
            tcp_tunnel(tcp, remote, acceptor, ctx).await;
            drop(permit);
        });
    }
    tracker.close();
}

async fn quic_tunnel(incoming: quinn::Incoming, ctx: Ctx) {
    let remote = incoming.remote_address();
    let Some(conn) = handshake(&ctx, remote, "QUIC", incoming.into_future()).await else {
        return;
    };
    let cert = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.into_iter().next());
    let link = PeerLink::Quic(conn.clone());
    let Some(peer) = identify(&ctx, cert, remote, &link).await else {
        return;
    };
    let span = tracing::info_span!("tunnel", spoke.id = %peer.name, spoke.addr = %remote, transport = "quic");
    session(link, Acceptor::Quic(conn), peer, remote, ctx)
        .instrument(span)
        .await;
}

async fn tcp_tunnel(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Ctx,
) {
    let Some(tls) = handshake(&ctx, remote, "TCP", acceptor.accept(tcp)).await else {
        return;
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned());
    let cancel = CancellationToken::new();
    let link = PeerLink::Tcp(cancel.clone());
    let Some(peer) = identify(&ctx, cert, remote, &link).await else {
        return;
    };
    let limits = ctx.cfg.limits();
    let h2 = h2::server::Builder::new()
        .initial_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_frame_size(16 * 1024 * 1024 - 1)
        .handshake(tls);
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, h2).await {
        Ok(Ok(c)) => c,
        _ => {
            tracing::info!(%remote, "TCP tunnel: HTTP/2 did not start");
            return;
        }
    };
    let (streams, accepted) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(drive_h2(conn, streams, cancel.clone()));
    let span = tracing::info_span!("tunnel", spoke.id = %peer.name, spoke.addr = %remote, transport = "tcp");
    tokio::select! {
        _ = session(link, Acceptor::Tcp(accepted), peer, remote, ctx).instrument(span) => {}
        _ = cancel.cancelled() => {}
    }
    cancel.cancel();
}

/// Drives a TCP tunnel's HTTP/2 connection (it makes progress only while
/// polled) and hands each stream the spoke opens to the session, until
/// the connection ends or `cancel` fires; then fires `cancel`.
async fn drive_h2<T>(
    mut conn: h2::server::Connection<T, bytes::Bytes>,
    streams: tokio::sync::mpsc::Sender<(SendHalf, RecvHalf)>,
    cancel: CancellationToken,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            next = conn.accept() => next,
        };
        let (req, mut respond) = match next {
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "TCP tunnel ended");
                break;
            }
            None => break,
        };
        let Ok(send) = respond.send_response(http::Response::new(()), false) else {
            continue;
        };
        let pair = (
            SendHalf::H2(H2Send::new(send)),
            RecvHalf::H2(H2Recv::new(req.into_body())),
        );
        if streams.send(pair).await.is_err() {
            break;
        }
    }
    cancel.cancel();
}

/// Runs a transport's handshake under the handshake timeout; a failure is
/// logged and counted, and gives `None`.
async fn handshake<T, E: std::fmt::Display>(
    ctx: &Ctx,
    remote: SocketAddr,
    transport: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    let failure = match tokio::time::timeout(HANDSHAKE_TIMEOUT, fut).await {
        Ok(Ok(done)) => return Some(done),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    ctx.state.metrics.tunnel_refused(TunnelRefusal::handshake);
    tracing::info!(%remote, transport, error = %failure, "tunnel handshake failed");
    None
}

/// Who is at the other end of a tunnel.
pub(super) struct Peer {
    /// The spoke its certificate belongs to.
    pub(super) name: String,
    /// What it may announce.
    pub(super) allowed: AllowedPublic,
    /// The SHA-256 of its certificate: a tunnel whose spoke has enrolled
    /// again since holds an old one, and is closed.
    pub(super) cert_sha256: Vec<u8>,
    /// When its certificate stops being valid, Unix seconds.
    pub(super) cert_expires_at: Option<i64>,
}

/// The spoke a client certificate belongs to, and what it may announce;
/// refuses the tunnel if none.
async fn identify(
    ctx: &Ctx,
    cert: Option<CertificateDer<'static>>,
    remote: SocketAddr,
    link: &PeerLink,
) -> Option<Peer> {
    let Some(cert) = cert else {
        link.close(close::PROTOCOL, b"a client certificate is required");
        return None;
    };
    match ctx.state.store.spoke_for_certificate(&cert).await {
        Ok(Some((name, allowed))) => Some(Peer {
            name,
            allowed,
            cert_sha256: ring::digest::digest(&ring::digest::SHA256, &cert)
                .as_ref()
                .to_vec(),
            cert_expires_at: ferry_common::cert_time::not_after(&cert),
        }),
        Ok(None) => {
            ctx.state
                .metrics
                .tunnel_refused(TunnelRefusal::unknown_or_revoked);
            tracing::warn!(%remote, "refused a tunnel: its certificate belongs to no enrolled, unrevoked spoke");
            link.close(close::REVOKED, b"unknown or revoked spoke");
            None
        }
        Err(e) => {
            tracing::error!(%remote, error = %e, "refused a tunnel: the store failed");
            link.close(close::SHUTDOWN, b"hub store unavailable");
            None
        }
    }
}
