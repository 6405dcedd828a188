//! One tunnel from a spoke, on either transport: who it is (its
//! certificate, checked against the registry), the control stream (hello,
//! heartbeats, notices both ways) and the streams of forwarded requests,
//! each answered by the hub's own router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_common::body::{Body, BoxError};
use ferry_common::http_server::ClientAddr;
use ferry_common::link::{H2Recv, H2Send, RecvHalf, SendHalf};
use ferry_common::proto::{
    Frame, NoticeKind, PROTOCOL_VERSION, Refusal, RequestHead, ResponseHead, Welcome,
};
use ferry_common::tunnel_io::{FrameReader, body_from_frames, close};
use http_body_util::BodyExt as _;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::{PeerLink, Registry};
use crate::api::{self, AppState};
use crate::config::TunnelConfig;
use crate::metrics::TunnelRefusal;

/// Marks a request that arrived through a spoke's tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaSpoke(pub String);

/// Marks a request the spoke made on its own behalf (no client address in
/// its head), as opposed to one it forwarded for a client. Only these may
/// use the internal routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpokeOwn;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a session's streams come from. An HTTP/2 connection makes
/// progress only while it is polled, so a task of its own drives it and
/// hands over each stream the spoke opens.
enum Acceptor {
    Quic(quinn::Connection),
    Tcp(tokio::sync::mpsc::Receiver<(SendHalf, RecvHalf)>),
}

impl Acceptor {
    /// The next stream the spoke opened.
    async fn accept(&mut self) -> Result<(SendHalf, RecvHalf), String> {
        match self {
            Acceptor::Quic(c) => c
                .accept_bi()
                .await
                .map(|(s, r)| (SendHalf::Quic(s), RecvHalf::Quic(r)))
                .map_err(|e| e.to_string()),
            Acceptor::Tcp(rx) => rx
                .recv()
                .await
                .ok_or_else(|| "the TCP tunnel closed".to_owned()),
        }
    }
}

/// Everything a session shares with the hub.
#[derive(Clone)]
struct Ctx {
    state: Arc<AppState>,
    registry: Arc<Registry>,
    cfg: TunnelConfig,
    shutdown: CancellationToken,
}

/// Accepts QUIC tunnels until `shutdown`, then closes the endpoint.
pub async fn serve_quic(
    endpoint: quinn::Endpoint,
    state: Arc<AppState>,
    registry: Arc<Registry>,
    cfg: TunnelConfig,
    shutdown: CancellationToken,
) {
    let ctx = Ctx {
        state,
        registry,
        cfg,
        shutdown,
    };
    let tracker = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        tracker.spawn(quic_tunnel(incoming, ctx.clone()));
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
    let ctx = Ctx {
        state,
        registry,
        cfg,
        shutdown,
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "tunnel accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tracker.spawn(tcp_tunnel(tcp, remote, acceptor.clone(), ctx.clone()));
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
    let Some(name) = identify(&ctx, cert, remote, &link).await else {
        return;
    };
    let span =
        tracing::info_span!("tunnel", spoke.id = %name, spoke.addr = %remote, transport = "quic");
    session(link, Acceptor::Quic(conn), name, remote, ctx)
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
    let Some(name) = identify(&ctx, cert, remote, &link).await else {
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
    let driver = cancel.clone();
    tokio::spawn(async move {
        let mut conn = conn;
        loop {
            let next = tokio::select! {
                _ = driver.cancelled() => break,
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
        driver.cancel();
    });
    let span =
        tracing::info_span!("tunnel", spoke.id = %name, spoke.addr = %remote, transport = "tcp");
    tokio::select! {
        _ = session(link, Acceptor::Tcp(accepted), name, remote, ctx).instrument(span) => {}
        _ = cancel.cancelled() => {}
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

/// The spoke a client certificate belongs to; refuses the tunnel if none.
async fn identify(
    ctx: &Ctx,
    cert: Option<CertificateDer<'static>>,
    remote: SocketAddr,
    link: &PeerLink,
) -> Option<String> {
    let Some(cert) = cert else {
        link.close(close::PROTOCOL, b"a client certificate is required");
        return None;
    };
    match ctx.state.store.spoke_for_certificate(&cert).await {
        Ok(Some(name)) => Some(name),
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

async fn session(
    link: PeerLink,
    mut acceptor: Acceptor,
    name: String,
    remote: SocketAddr,
    ctx: Ctx,
) {
    let Ctx {
        state,
        registry,
        cfg,
        shutdown,
    } = ctx;
    let (mut send, recv) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept()).await {
        Ok(Ok(pair)) => pair,
        _ => {
            link.close(close::PROTOCOL, b"no control stream");
            return;
        }
    };
    let mut control = FrameReader::new(recv, cfg.max_frame_bytes);
    let mut announce = None;
    let refusal = match tokio::time::timeout(HANDSHAKE_TIMEOUT, control.next()).await {
        Ok(Ok(Some(Frame::Hello(h)))) if h.version != PROTOCOL_VERSION => Some(Refusal {
            code: "unsupported_version".into(),
            reason: format!(
                "this hub speaks tunnel version {PROTOCOL_VERSION}, not {}",
                h.version
            ),
        }),
        Ok(Ok(Some(Frame::Hello(h)))) if h.spoke != name => Some(Refusal {
            code: "wrong_name".into(),
            reason: format!("the certificate is for '{name}', not '{}'", h.spoke),
        }),
        Ok(Ok(Some(Frame::Hello(h)))) => {
            tracing::debug!(software = %h.software, steering = ?h.steering, "hello");
            announce = h.steering;
            None
        }
        Ok(Ok(other)) => Some(Refusal {
            code: "protocol".into(),
            reason: format!("expected hello, got {other:?}")
                .chars()
                .take(200)
                .collect(),
        }),
        Ok(Err(e)) => Some(Refusal {
            code: "protocol".into(),
            reason: e.to_string(),
        }),
        Err(_) => Some(Refusal {
            code: "timeout".into(),
            reason: "no hello in time".into(),
        }),
    };
    if let Some(r) = refusal {
        state.metrics.tunnel_refused(TunnelRefusal::protocol);
        tracing::warn!(code = %r.code, reason = %r.reason, "refused a tunnel");
        let _ = send.send_frame(&Frame::Refuse(r)).await;
        send.finish();
        tokio::time::sleep(Duration::from_millis(50)).await;
        link.close(close::PROTOCOL, b"refused");
        return;
    }
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        heartbeat_interval_ms: cfg.heartbeat_interval_secs * 1000,
        client_prefixes: state.steering.client_prefixes(),
        hub_id: state
            .spokes
            .as_ref()
            .map(|s| s.hubs.id().to_owned())
            .unwrap_or_default(),
        hubs: state
            .spokes
            .as_ref()
            .map(|s| s.hubs.current())
            .unwrap_or_default(),
    };
    if send.send_frame(&Frame::Welcome(welcome)).await.is_err() {
        return;
    }
    let (notices_tx, mut notices) = tokio::sync::mpsc::channel(64);
    let id = registry.insert(&name, link.clone(), notices_tx, announce);
    let transport = link.transport();
    state.metrics.tunnel(&name, transport, true);
    tracing::info!("spoke connected");

    // A spoke that stops sending heartbeats is gone, even where the
    // transport cannot tell (a TCP tunnel whose peer vanished).
    let silence = Duration::from_secs(cfg.heartbeat_interval_secs * 3);
    let control_loop = async {
        loop {
            tokio::select! {
                frame = tokio::time::timeout(silence, control.next()) => match frame.unwrap_or_else(|_| {
                    Err(ferry_common::tunnel_io::FrameIoError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no heartbeat for three intervals",
                    )))
                }) {
                    Ok(Some(Frame::Heartbeat(mut hb))) => {
                        let seq = hb.seq;
                        let rtts = std::mem::take(&mut hb.client_rtts);
                        registry.heartbeat(&name, hb);
                        state.steering.observe_spoke(&name, &rtts);
                        state.metrics.tunnel_rtt(&name, link.rtt());
                        if send.send_frame(&Frame::HeartbeatAck(seq)).await.is_err() {
                            return "control stream closed".to_owned();
                        }
                    }
                    Ok(Some(Frame::Notice(n))) if n.kind == NoticeKind::Drain => {
                        registry.draining(&name);
                        tracing::info!(reason = %n.reason, "spoke is draining");
                    }
                    Ok(Some(other)) => return format!("unexpected frame on the control stream: {other:?}"),
                    Ok(None) => return "control stream ended".to_owned(),
                    Err(e) => return format!("control stream failed: {e}"),
                },
                Some(notice) = notices.recv() => {
                    if send.send_frame(&Frame::Notice(notice)).await.is_err() {
                        return "control stream closed".to_owned();
                    }
                }
            }
        }
    };
    let streams = async {
        let tracker = TaskTracker::new();
        let reason = loop {
            match acceptor.accept().await {
                Ok((send, recv)) => {
                    let state = state.clone();
                    let name = name.clone();
                    let max = cfg.max_frame_bytes;
                    tracker.spawn(
                        forward(state, name, remote, send, recv, max)
                            .instrument(tracing::Span::current()),
                    );
                }
                Err(e) => break e,
            }
        };
        tracker.close();
        tracker.wait().await;
        reason
    };
    let reason = tokio::select! {
        r = control_loop => r,
        r = streams => r,
        _ = shutdown.cancelled() => "hub shutting down".to_owned(),
    };
    registry.remove(&name, id);
    state.metrics.tunnel(&name, transport, false);
    tracing::info!(reason = %reason, "spoke disconnected");
}

/// Answers one forwarded request with the hub's router.
async fn forward(
    state: Arc<AppState>,
    spoke: String,
    remote: SocketAddr,
    mut send: SendHalf,
    recv: RecvHalf,
    max_frame: usize,
) {
    let _stream = state.metrics.stream();
    let mut reader = FrameReader::new(recv, max_frame);
    let head = match reader.next().await {
        Ok(Some(Frame::Request(h))) => h,
        Ok(other) => {
            tracing::warn!(frame = ?other.map(|f| format!("{f:?}").chars().take(80).collect::<String>()), "a stream did not start with a request; resetting it");
            send.reset(close::STREAM_MALFORMED);
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "malformed frame; resetting the stream");
            send.reset(close::STREAM_MALFORMED);
            reader.get_mut().stop(close::STREAM_MALFORMED);
            return;
        }
    };
    let req = match build_request(&head, remote, &spoke, reader) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unusable forwarded request; resetting the stream");
            send.reset(close::STREAM_MALFORMED);
            return;
        }
    };
    let resp = api::handle(state, req).await;
    if let Err(e) = send_response(&mut send, resp, max_frame).await {
        tracing::debug!(error = %e, "the spoke went away while the answer was sent");
        send.reset(close::STREAM_MALFORMED);
    }
}

fn build_request(
    head: &RequestHead,
    remote: SocketAddr,
    spoke: &str,
    reader: FrameReader<RecvHalf>,
) -> Result<http::Request<Body>, http::Error> {
    let mut builder = http::Request::builder()
        .method(head.method.as_str())
        .uri(head.uri.as_str());
    for (k, v) in &head.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let mut req = builder.body(body_from_frames(reader, "the request body"))?;
    let client = head
        .client_addr
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or(remote);
    req.extensions_mut().insert(ClientAddr(client));
    req.extensions_mut().insert(ViaSpoke(spoke.to_owned()));
    if head.client_addr.is_none() {
        req.extensions_mut().insert(SpokeOwn);
    }
    Ok(req)
}

async fn send_response(
    send: &mut SendHalf,
    resp: http::Response<Body>,
    max_frame: usize,
) -> Result<(), BoxError> {
    let (parts, mut body) = resp.into_parts();
    let head = ResponseHead {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
    };
    send.send_frame(&Frame::Response(head)).await?;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let mut data: Bytes = data;
            while !data.is_empty() {
                let piece = data.split_to(data.len().min(max_frame));
                send.send_frame(&Frame::Data(piece)).await?;
            }
        }
    }
    send.send_frame(&Frame::End).await?;
    send.finish();
    Ok(())
}
