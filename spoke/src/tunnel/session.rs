//! One established tunnel, until it ends: heartbeats on the interval the
//! hub asked for (numbered and judged by `ferry_common::proto::liveness`),
//! the hub's notices, telling the hub when the spoke drains, and — on
//! TCP — trying QUIC again every `tunnel.quic_retry_secs`, beside the
//! heartbeats, so the tunnel moves back as soon as UDP gets through.

use std::time::Duration;

use ferry_common::link::Link;
use ferry_common::proto::liveness::{Beat, Heartbeats, Load};
use ferry_common::proto::{Frame, Notice, NoticeKind};
use ferry_common::tunnel_io::close;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connector::{Connector, Control, TunnelError, refused_or_lost};
use crate::metrics::Metrics;

/// How a session ended.
pub(super) enum Ended {
    /// Shut down on purpose.
    Stopped,
    /// A better link (QUIC, after running on TCP) is ready.
    Switch(Control),
}

/// What a tunnel session answers to besides the hub.
pub(super) struct Signals<'a> {
    pub(super) metrics: &'a Metrics,
    pub(super) draining: &'a CancellationToken,
    pub(super) shutdown: &'a CancellationToken,
    pub(super) on_notice: &'a (dyn Fn(&ferry_common::proto::Notice) + Send + Sync),
    pub(super) connector: &'a Connector,
}

/// Runs one tunnel until it ends.
pub(super) async fn session(control: Control, signals: &Signals<'_>) -> Result<Ended, TunnelError> {
    let Control {
        link,
        mut send,
        mut reader,
        interval,
    } = control;
    let Signals {
        metrics,
        draining,
        shutdown,
        on_notice,
        connector,
    } = *signals;
    let on_tcp = matches!(link, Link::Tcp(_));
    let mut told_draining = false;
    let mut beats = Heartbeats::new(interval, Instant::now(), metrics.content_total());
    let mut tick = tokio::time::interval(beats.interval());
    let mut probe =
        tokio::time::interval(Duration::from_secs(connector.cfg.tunnel.quic_retry_secs));
    probe.tick().await;
    type Attempt<'a> = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Control, TunnelError>> + Send + 'a>,
    >;
    let mut attempt: Attempt<'_> = Box::pin(std::future::pending());
    let mut probing = false;
    let lost = |link: &Link| refused_or_lost(link, "the control stream failed".into());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                link.close(close::SHUTDOWN, b"spoke shutting down");
                return Ok(Ended::Stopped);
            }
            _ = draining.cancelled(), if !told_draining => {
                told_draining = true;
                let notice = Notice::new(NoticeKind::Drain, "the spoke is shutting down");
                if send.send_frame(&Frame::Notice(notice)).await.is_err() {
                    return Err(lost(&link));
                }
                tracing::info!("told the hub this spoke is draining");
            }
            _ = probe.tick(), if on_tcp && !told_draining && !probing => {
                attempt = Box::pin(connector.connect_quic());
                probing = true;
            }
            result = &mut attempt, if probing => {
                probing = false;
                if let Ok(better) = result {
                    return Ok(Ended::Switch(better));
                }
            }
            _ = tick.tick() => {
                let load = Load {
                    active_transfers: metrics.active_now(),
                    content_bytes_total: metrics.content_total(),
                    client_rtts: connector.client_rtts.take(connector.target.index),
                };
                match beats.tick(Instant::now(), load) {
                    Beat::Send(hb) => {
                        if send.send_frame(&Frame::Heartbeat(hb)).await.is_err() {
                            return Err(lost(&link));
                        }
                    }
                    Beat::Dead => {
                        link.close(close::PROTOCOL, b"heartbeats unanswered");
                        return Err(TunnelError::Silent);
                    }
                }
            }
            frame = reader.next() => match frame {
                Ok(Some(Frame::HeartbeatAck(seq))) => {
                    if beats.acked(seq, Instant::now()) {
                        metrics.rtt(connector.target.index, link.rtt());
                    }
                }
                Ok(Some(Frame::Notice(n))) => match n.kind {
                    NoticeKind::Drain => tracing::info!(reason = %n.reason, "the hub asks this spoke to drain"),
                    NoticeKind::Revoked => tracing::error!(reason = %n.reason, "the hub revoked this spoke"),
                    NoticeKind::InvalidateGrants => {
                        tracing::debug!(reason = %n.reason, "dropping cached grants");
                        on_notice(&n);
                    }
                    NoticeKind::SlowDown => on_notice(&n),
                    NoticeKind::Hubs => connector.learn(None, n.hubs),
                    NoticeKind::Unknown => tracing::debug!(reason = %n.reason, "ignored a notice this spoke does not know"),
                },
                Ok(other) => {
                    tracing::warn!(frame = ?other, "unexpected frame on the control stream");
                    return Err(refused_or_lost(&link, "the control stream ended".into()));
                }
                Err(e) => return Err(refused_or_lost(&link, e.to_string())),
            },
        }
    }
}
