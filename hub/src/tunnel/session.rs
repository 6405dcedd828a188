//! One tunnel from an identified spoke: the hello and welcome (decided by
//! `ferry_common::proto::handshake`), then the control stream (heartbeats
//! and their acknowledgements, notices both ways, the spoke's silence
//! watched by `ferry_common::proto::liveness`) beside the streams of
//! forwarded requests, until either ends or the hub shuts down.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_common::link::{RecvHalf, SendHalf};
use ferry_common::proto::handshake::{self, FirstFrame, PeerIdentity, WelcomeTerms};
use ferry_common::proto::liveness::Silence;
use ferry_common::proto::{Frame, NoticeKind};
use ferry_common::tunnel_io::{FrameReader, close};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::PeerLink;
use super::accept::{Ctx, HANDSHAKE_TIMEOUT, Peer};
use super::forward::forward;
use super::registry::REPLACED_DRAIN;
use crate::metrics::TunnelRefusal;

/// How long a tunnel the spoke replaced is kept open, once its requests
/// are written, for it to be closed (by the spoke, or by the registry
/// after its grace).
const REPLACED_CLOSE: Duration = Duration::from_secs(30);

/// Where a session's streams come from. An HTTP/2 connection makes
/// progress only while it is polled, so a task of its own drives it and
/// hands over each stream the spoke opens.
pub(super) enum Acceptor {
    Quic(quinn::Connection),
    Tcp(tokio::sync::mpsc::Receiver<(SendHalf, RecvHalf)>),
}

/// Why no further stream comes from a tunnel.
#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error("{0}")]
    Quic(#[from] quinn::ConnectionError),
    #[error("the TCP tunnel closed")]
    TcpClosed,
}

impl Acceptor {
    /// The next stream the spoke opened.
    async fn accept(&mut self) -> Result<(SendHalf, RecvHalf), AcceptError> {
        match self {
            Acceptor::Quic(c) => {
                let (s, r) = c.accept_bi().await?;
                Ok((SendHalf::Quic(s), RecvHalf::Quic(r)))
            }
            Acceptor::Tcp(rx) => rx.recv().await.ok_or(AcceptError::TcpClosed),
        }
    }
}

/// What the hub tells each spoke it welcomes.
fn terms(ctx: &Ctx) -> WelcomeTerms {
    let support = ctx.state.spokes.as_ref();
    WelcomeTerms {
        heartbeat_interval: Duration::from_secs(ctx.cfg.heartbeat_interval_secs),
        client_prefixes: ctx.state.steering.client_prefixes(),
        hub_id: support.map(|s| s.hubs.id().to_owned()).unwrap_or_default(),
        hubs: support.map(|s| s.hubs.current()).unwrap_or_default(),
    }
}

/// Runs the tunnel of spoke `name` until it ends.
pub(super) async fn session(
    link: PeerLink,
    mut acceptor: Acceptor,
    peer: Peer,
    remote: SocketAddr,
    ctx: Ctx,
) {
    let Peer {
        name,
        allowed,
        cert_sha256,
        cert_expires_at,
    } = peer;
    let Ctx {
        state,
        registry,
        cfg,
        shutdown,
    } = ctx.clone();
    let (mut send, recv) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept()).await {
        Ok(Ok(pair)) => pair,
        _ => {
            link.close(close::PROTOCOL, b"no control stream");
            return;
        }
    };
    let mut control = FrameReader::new(recv, cfg.max_frame_bytes);
    let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, control.next()).await {
        Ok(Ok(Some(frame))) => FirstFrame::Frame(frame),
        Ok(Ok(None)) => FirstFrame::Ended,
        Ok(Err(e)) => FirstFrame::Broken(e.to_string()),
        Err(_) => FirstFrame::TimedOut,
    };
    let peer = PeerIdentity {
        spoke: name.clone(),
    };
    let accepted = match handshake::accept_first_frame(first, &peer, &terms(&ctx)) {
        Ok(a) => a,
        Err(refusal) => {
            state.metrics.tunnel_refused(TunnelRefusal::protocol);
            tracing::warn!(code = %refusal.code, reason = %refusal.reason, "refused a tunnel");
            let _ = send.send_frame(&Frame::Refuse(refusal)).await;
            send.finish();
            // The spoke closes the tunnel once it has read the refusal;
            // one that does not is closed after the handshake timeout.
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, link.closed()).await;
            link.close(close::PROTOCOL, b"refused");
            return;
        }
    };
    tracing::debug!(software = %accepted.software, steering = ?accepted.announce, "hello");
    let announced = allowed.filter(accepted.announce);
    if !announced.refused.is_empty() {
        state.metrics.announcement_refused();
        tracing::warn!(
            refused = ?announced.refused,
            "the spoke announced addresses or a URL the operator did not allow (ferry-hub spoke allow); steering leaves them out"
        );
    }
    if send
        .send_frame(&Frame::Welcome(accepted.welcome))
        .await
        .is_err()
    {
        return;
    }
    let (notices_tx, mut notices) = tokio::sync::mpsc::channel(64);
    let tracker = TaskTracker::new();
    let id = registry.insert(
        &name,
        link.clone(),
        notices_tx,
        announced.announce,
        super::registry::Identity {
            cert_sha256,
            cert_expires_at,
            software: software_shown(&accepted.software),
        },
        tracker.clone(),
    );
    let transport = link.transport();
    state.metrics.tunnel(&name, transport, true);
    tracing::info!("spoke connected");

    let interval = Duration::from_secs(cfg.heartbeat_interval_secs);
    let control_loop = async {
        let mut silence = Silence::new(interval, Instant::now());
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(silence.deadline()) => {
                    return "no word from the spoke for three heartbeat intervals".to_owned();
                }
                frame = control.next() => {
                    silence.heard(Instant::now());
                    match frame {
                        Ok(Some(Frame::Heartbeat(mut hb))) => {
                            let seq = hb.seq;
                            let rtts = std::mem::take(&mut hb.client_rtts);
                            registry.heartbeat(&name, id, hb);
                            state.steering.observe_spoke(&name, &rtts);
                            state.metrics.tunnel_rtt(&name, link.rtt());
                            if send.send_frame(&Frame::HeartbeatAck(seq)).await.is_err() {
                                return "control stream closed".to_owned();
                            }
                        }
                        Ok(Some(Frame::Notice(n))) if n.kind == NoticeKind::Drain => {
                            registry.draining(&name, id);
                            tracing::info!(reason = %n.reason, "spoke is draining");
                        }
                        Ok(Some(Frame::Notice(n))) => {
                            tracing::debug!(kind = ?n.kind, reason = %n.reason, "ignored a notice this hub does not act on");
                        }
                        Ok(Some(other)) => return format!("unexpected frame on the control stream: {other:?}"),
                        Ok(None) => return "control stream ended".to_owned(),
                        Err(e) => return format!("control stream failed: {e}"),
                    }
                }
                Some(notice) = notices.recv() => {
                    if send.send_frame(&Frame::Notice(notice)).await.is_err() {
                        return "control stream closed".to_owned();
                    }
                }
            }
        }
    };
    let streams = async {
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
                Err(e) => break e.to_string(),
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
    let replaced = !registry.remove(&name, id);
    state.metrics.tunnel(&name, transport, false);
    tracing::info!(reason = %reason, "spoke disconnected");
    // The requests still on the tunnel finish before it goes: a spoke that
    // moved to a newer tunnel (TCP back to QUIC) ends this one's control
    // stream at once, while responses on it are still streaming; once they
    // are written, the spoke closes the old tunnel itself when it has them
    // (dropping it here would lose what is still buffered). On a dead
    // tunnel they fail at once; at shutdown they are not waited for.
    tracker.close();
    if !shutdown.is_cancelled() && (replaced || !tracker.is_empty()) {
        tracing::debug!(
            requests = tracker.len(),
            replaced,
            "letting the requests on the tunnel finish"
        );
        let _ = tokio::time::timeout(REPLACED_DRAIN, tracker.wait()).await;
        if replaced {
            let _ = tokio::time::timeout(REPLACED_CLOSE, link.closed()).await;
        }
    }
}

/// The software version a spoke gave in its hello, as the operator's API
/// shows it: at most 64 characters of printable ASCII (anything else is
/// a `?`), since the spoke, not the hub, wrote it.
fn software_shown(said: &str) -> String {
    said.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod software_tests {
    use super::software_shown;

    #[test]
    fn a_spokes_software_version_is_shown_short_and_printable() {
        assert_eq!(software_shown("0.2.0"), "0.2.0");
        assert_eq!(software_shown("1.0\u{7}<b>\n"), "1.0?<b>?");
        assert_eq!(software_shown(&"x".repeat(500)).len(), 64);
    }
}
