//! One tunnel from a spoke: who it is (its certificate, checked against the
//! registry), the control stream (hello, heartbeats) and the streams of
//! forwarded requests, each answered by the hub's own router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_common::body::{Body, BoxError};
use ferry_common::http_server::ClientAddr;
use ferry_common::proto::{
    Frame, NoticeKind, PROTOCOL_VERSION, Refusal, RequestHead, ResponseHead, Welcome,
};
use ferry_common::tunnel_io::{FrameReader, body_from_frames, close, write_frame};
use http_body_util::BodyExt as _;
use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::Registry;
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

/// Accepts tunnels until `shutdown`, then closes the endpoint.
pub async fn serve(
    endpoint: quinn::Endpoint,
    state: Arc<AppState>,
    registry: Arc<Registry>,
    cfg: TunnelConfig,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        tracker.spawn(tunnel(
            incoming,
            state.clone(),
            registry.clone(),
            cfg.clone(),
            shutdown.clone(),
        ));
    }
    endpoint.close(close::SHUTDOWN.into(), b"hub shutting down");
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
}

async fn tunnel(
    incoming: quinn::Incoming,
    state: Arc<AppState>,
    registry: Arc<Registry>,
    cfg: TunnelConfig,
    shutdown: CancellationToken,
) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            state.metrics.tunnel_refused(TunnelRefusal::handshake);
            tracing::info!(%remote, error = %e, "tunnel handshake failed");
            return;
        }
        Err(_) => {
            state.metrics.tunnel_refused(TunnelRefusal::handshake);
            tracing::info!(%remote, "tunnel handshake timed out");
            return;
        }
    };
    let cert = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.into_iter().next());
    let Some(cert) = cert else {
        conn.close(close::PROTOCOL.into(), b"a client certificate is required");
        return;
    };
    let name = match state.store.spoke_for_certificate(&cert).await {
        Ok(Some(name)) => name,
        Ok(None) => {
            state
                .metrics
                .tunnel_refused(TunnelRefusal::unknown_or_revoked);
            tracing::warn!(%remote, "refused a tunnel: its certificate belongs to no enrolled, unrevoked spoke");
            conn.close(close::REVOKED.into(), b"unknown or revoked spoke");
            return;
        }
        Err(e) => {
            tracing::error!(%remote, error = %e, "refused a tunnel: the store failed");
            conn.close(close::SHUTDOWN.into(), b"hub store unavailable");
            return;
        }
    };
    let span = tracing::info_span!("tunnel", spoke.id = %name, spoke.addr = %remote);
    session(conn, name, state, registry, cfg, shutdown)
        .instrument(span)
        .await;
}

async fn session(
    conn: quinn::Connection,
    name: String,
    state: Arc<AppState>,
    registry: Arc<Registry>,
    cfg: TunnelConfig,
    shutdown: CancellationToken,
) {
    let (mut send, recv) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(pair)) => pair,
        _ => {
            conn.close(close::PROTOCOL.into(), b"no control stream");
            return;
        }
    };
    let mut control = FrameReader::new(recv, cfg.max_frame_bytes);
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
            tracing::debug!(software = %h.software, "hello");
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
        let _ = write_frame(&mut send, &Frame::Refuse(r)).await;
        let _ = send.finish();
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.close(close::PROTOCOL.into(), b"refused");
        return;
    }
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        heartbeat_interval_ms: cfg.heartbeat_interval_secs * 1000,
    };
    if write_frame(&mut send, &Frame::Welcome(welcome))
        .await
        .is_err()
    {
        return;
    }
    registry.insert(&name, conn.clone());
    state.metrics.tunnel(&name, true);
    tracing::info!("spoke connected");

    let heartbeats = async {
        loop {
            match control.next().await {
                Ok(Some(Frame::Heartbeat(hb))) => {
                    let seq = hb.seq;
                    registry.heartbeat(&name, hb);
                    state.metrics.tunnel_rtt(&name, conn.rtt());
                    if write_frame(&mut send, &Frame::HeartbeatAck(seq))
                        .await
                        .is_err()
                    {
                        return "control stream closed".to_owned();
                    }
                }
                Ok(Some(Frame::Notice(n))) if n.kind == NoticeKind::Drain => {
                    registry.draining(&name);
                    tracing::info!(reason = %n.reason, "spoke is draining");
                }
                Ok(Some(other)) => {
                    return format!("unexpected frame on the control stream: {other:?}");
                }
                Ok(None) => return "control stream ended".to_owned(),
                Err(e) => return format!("control stream failed: {e}"),
            }
        }
    };
    let streams = async {
        let tracker = TaskTracker::new();
        let reason = loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    let state = state.clone();
                    let name = name.clone();
                    let max = cfg.max_frame_bytes;
                    let remote = conn.remote_address();
                    tracker.spawn(
                        forward(state, name, remote, send, recv, max)
                            .instrument(tracing::Span::current()),
                    );
                }
                Err(e) => break e.to_string(),
            }
        };
        tracker.close();
        tracker.wait().await;
        reason
    };
    let reason = tokio::select! {
        r = heartbeats => r,
        r = streams => r,
        _ = shutdown.cancelled() => "hub shutting down".to_owned(),
    };
    registry.remove(&name, &conn);
    state.metrics.tunnel(&name, false);
    tracing::info!(reason = %reason, "spoke disconnected");
}

/// Answers one forwarded request with the hub's router.
async fn forward(
    state: Arc<AppState>,
    spoke: String,
    remote: SocketAddr,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    max_frame: usize,
) {
    let _stream = state.metrics.stream();
    let mut reader = FrameReader::new(recv, max_frame);
    let head = match reader.next().await {
        Ok(Some(Frame::Request(h))) => h,
        Ok(other) => {
            tracing::warn!(frame = ?other.map(|f| format!("{f:?}").chars().take(80).collect::<String>()), "a stream did not start with a request; resetting it");
            let _ = send.reset(close::STREAM_MALFORMED.into());
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "malformed frame; resetting the stream");
            let _ = send.reset(close::STREAM_MALFORMED.into());
            let _ = reader.get_mut().stop(close::STREAM_MALFORMED.into());
            return;
        }
    };
    let req = match build_request(&head, remote, &spoke, reader) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unusable forwarded request; resetting the stream");
            let _ = send.reset(close::STREAM_MALFORMED.into());
            return;
        }
    };
    let resp = api::handle(state, req).await;
    if let Err(e) = send_response(&mut send, resp, max_frame).await {
        tracing::debug!(error = %e, "the spoke went away while the answer was sent");
        let _ = send.reset(close::STREAM_MALFORMED.into());
    }
}

fn build_request(
    head: &RequestHead,
    remote: SocketAddr,
    spoke: &str,
    reader: FrameReader<quinn::RecvStream>,
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
    send: &mut quinn::SendStream,
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
    write_frame(send, &Frame::Response(head)).await?;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let mut data: Bytes = data;
            while !data.is_empty() {
                let piece = data.split_to(data.len().min(max_frame));
                write_frame(send, &Frame::Data(piece)).await?;
            }
        }
    }
    write_frame(send, &Frame::End).await?;
    send.finish()?;
    Ok(())
}
