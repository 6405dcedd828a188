//! The spoke's end of the tunnel: connect to the hub over QUIC with the
//! spoke's certificate, say hello, send heartbeats, and reconnect with
//! jittered exponential backoff when the tunnel is lost. The current
//! connection is published on a watch channel for the HTTP front.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_common::proto::{ALPN, Frame, Heartbeat, Hello, Notice, NoticeKind, PROTOCOL_VERSION};
use ferry_common::tunnel_io::{FrameReader, bind_udp, close, write_frame};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::SpokeConfig;
use crate::identity::Identity;
use crate::metrics::{Metrics, ReconnectCause};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tunnel as the rest of the spoke sees it.
#[derive(Debug, Clone)]
pub struct TunnelHandle {
    rx: watch::Receiver<Option<quinn::Connection>>,
}

impl TunnelHandle {
    /// A handle and the sender the connector publishes on.
    pub fn new() -> (Self, watch::Sender<Option<quinn::Connection>>) {
        let (tx, rx) = watch::channel(None);
        (Self { rx }, tx)
    }

    /// The live connection, if the tunnel is up.
    pub fn current(&self) -> Option<quinn::Connection> {
        self.rx
            .borrow()
            .clone()
            .filter(|c| c.close_reason().is_none())
    }
}

/// The wait before the next attempt: doubles from `initial`, capped at `max`.
pub fn next_backoff(previous: Option<Duration>, initial: Duration, max: Duration) -> Duration {
    match previous {
        None => initial,
        Some(p) => (p * 2).min(max),
    }
}

/// `d` scaled into [50 %, 100 %] by `unit` in [0, 1): spreads reconnecting
/// spokes so a restarted hub is not hit by all of them at once.
pub fn jitter(d: Duration, unit: f64) -> Duration {
    d.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

fn random_unit() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Why a tunnel attempt or session ended.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the hub refused the tunnel: {0}")]
    Refused(String),
    #[error("the tunnel was lost: {0}")]
    Lost(String),
    #[error("heartbeats went unanswered")]
    Silent,
}

impl TunnelError {
    fn cause(&self) -> ReconnectCause {
        match self {
            Self::Connect(_) => ReconnectCause::connect,
            Self::Refused(_) => ReconnectCause::refused,
            Self::Lost(_) => ReconnectCause::lost,
            Self::Silent => ReconnectCause::heartbeat,
        }
    }
}

/// Keeps a tunnel to the hub up until `shutdown`. When `draining` fires
/// first, the hub is told (so it stops sending clients here) while the
/// tunnel stays up for the requests still in flight.
pub async fn run(
    cfg: Arc<SpokeConfig>,
    identity: Identity,
    metrics: Arc<Metrics>,
    publish: watch::Sender<Option<quinn::Connection>>,
    draining: CancellationToken,
    shutdown: CancellationToken,
    on_invalidate: Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<()> {
    let (endpoint, server_name) = client_endpoint(&cfg, identity)?;
    let initial = Duration::from_millis(cfg.tunnel.reconnect_initial_ms);
    let max = Duration::from_secs(cfg.tunnel.reconnect_max_secs);
    let mut backoff: Option<Duration> = None;
    loop {
        let attempt = async {
            let (conn, send, reader, interval) = connect(&endpoint, &server_name, &cfg).await?;
            backoff = None;
            // Publish before announcing: whoever reads "tunnel up" can use it.
            let _ = publish.send(Some(conn.clone()));
            metrics.tunnel_up(true);
            tracing::info!(hub = %cfg.hub.tunnel_addr, "tunnel up");
            let signals = Signals {
                metrics: &metrics,
                draining: &draining,
                shutdown: &shutdown,
                on_invalidate: &*on_invalidate,
            };
            let result = session(&conn, send, reader, interval, &signals).await;
            let _ = publish.send(None);
            metrics.tunnel_up(false);
            result
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = shutdown.cancelled() => Ok(()),
        };
        if shutdown.is_cancelled() {
            break;
        }
        let err = match outcome {
            Ok(()) => TunnelError::Lost("closed".into()),
            Err(e) => e,
        };
        metrics.reconnect(err.cause());
        let wait = jitter(next_backoff(backoff, initial, max), random_unit());
        backoff = Some(next_backoff(backoff, initial, max));
        tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "tunnel down");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    endpoint.close(close::SHUTDOWN.into(), b"spoke shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}

/// The QUIC client endpoint and the name the hub's certificate carries.
fn client_endpoint(
    cfg: &SpokeConfig,
    identity: Identity,
) -> anyhow::Result<(quinn::Endpoint, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.hub_ca)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.cert, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(cfg.tunnel.limits().transport()));
    let local: SocketAddr = if cfg.hub.tunnel_addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("a literal address")
    } else {
        "[::]:0".parse().expect("a literal address")
    };
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        bind_udp(local)?,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(client);
    Ok((endpoint, identity.server_name))
}

type Control = (
    quinn::Connection,
    quinn::SendStream,
    FrameReader<quinn::RecvStream>,
    Duration,
);

async fn connect(
    endpoint: &quinn::Endpoint,
    server_name: &str,
    cfg: &SpokeConfig,
) -> Result<Control, TunnelError> {
    let connecting = endpoint
        .connect(cfg.hub.tunnel_addr, server_name)
        .map_err(|e| TunnelError::Connect(e.to_string()))?;
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(TunnelError::Connect(e.to_string())),
        Err(_) => return Err(TunnelError::Connect("handshake timed out".into())),
    };
    let lost = |e: &dyn std::fmt::Display| TunnelError::Lost(e.to_string());
    let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        spoke: cfg.name.clone(),
        software: env!("CARGO_PKG_VERSION").to_owned(),
    };
    write_frame(&mut send, &Frame::Hello(hello))
        .await
        .map_err(|e| lost(&e))?;
    let mut reader = FrameReader::new(recv, cfg.tunnel.max_frame_bytes);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(Frame::Welcome(w)))) => {
            let interval = Duration::from_millis(w.heartbeat_interval_ms.clamp(100, 60_000));
            Ok((conn, send, reader, interval))
        }
        Ok(Ok(Some(Frame::Refuse(r)))) => {
            Err(TunnelError::Refused(format!("{}: {}", r.code, r.reason)))
        }
        Ok(Ok(other)) => Err(TunnelError::Refused(format!("unexpected answer {other:?}"))),
        Ok(Err(_)) if conn.close_reason().is_some() => Err(refused_or_lost(&conn)),
        Ok(Err(e)) => Err(lost(&e)),
        Err(_) => Err(TunnelError::Lost("no welcome in time".into())),
    }
}

fn refused_or_lost(conn: &quinn::Connection) -> TunnelError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == close::REVOKED.into() =>
        {
            TunnelError::Refused("this spoke is unknown to the hub or was revoked".into())
        }
        Some(reason) => TunnelError::Lost(reason.to_string()),
        None => TunnelError::Lost("closed".into()),
    }
}

/// What a tunnel session answers to besides the hub.
struct Signals<'a> {
    metrics: &'a Metrics,
    draining: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    on_invalidate: &'a (dyn Fn() + Send + Sync),
}

async fn session(
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader<quinn::RecvStream>,
    interval: Duration,
    signals: &Signals<'_>,
) -> Result<(), TunnelError> {
    let Signals {
        metrics,
        draining,
        shutdown,
        on_invalidate,
    } = *signals;
    let mut told_draining = false;
    let notices = accept_notices(conn.clone(), on_invalidate);
    tokio::pin!(notices);
    let mut tick = tokio::time::interval(interval);
    let mut seq = 0u64;
    let mut last_ack = Instant::now();
    let (mut last_total, mut last_at) = (metrics.content_total(), Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                conn.close(close::SHUTDOWN.into(), b"spoke shutting down");
                return Ok(());
            }
            _ = draining.cancelled(), if !told_draining => {
                told_draining = true;
                let notice = Notice { kind: NoticeKind::Drain, reason: "the spoke is shutting down".into() };
                if write_frame(&mut send, &Frame::Notice(notice)).await.is_err() {
                    return Err(refused_or_lost(conn));
                }
                tracing::info!("told the hub this spoke is draining");
            }
            _ = tick.tick() => {
                if last_ack.elapsed() > interval * 3 {
                    conn.close(close::PROTOCOL.into(), b"heartbeats unanswered");
                    return Err(TunnelError::Silent);
                }
                seq += 1;
                let total = metrics.content_total();
                let secs = last_at.elapsed().as_secs_f64().max(0.001);
                let bytes_per_sec = (total.saturating_sub(last_total) as f64 / secs) as u64;
                (last_total, last_at) = (total, Instant::now());
                let hb = Heartbeat { seq, active_transfers: metrics.active_now(), bytes_per_sec };
                if write_frame(&mut send, &Frame::Heartbeat(hb)).await.is_err() {
                    return Err(refused_or_lost(conn));
                }
            }
            frame = reader.next() => match frame {
                Ok(Some(Frame::HeartbeatAck(_))) => {
                    last_ack = Instant::now();
                    metrics.rtt(conn.rtt());
                }
                Ok(other) => {
                    tracing::warn!(frame = ?other, "unexpected frame on the control stream");
                    return Err(refused_or_lost(conn));
                }
                Err(_) => return Err(refused_or_lost(conn)),
            },
            reason = &mut notices => return Err(reason),
        }
    }
}

/// Reads notices the hub pushes on streams it opens; returns when the
/// connection ends.
async fn accept_notices(
    conn: quinn::Connection,
    on_invalidate: &(dyn Fn() + Send + Sync),
) -> TunnelError {
    loop {
        let (_send, recv) = match conn.accept_bi().await {
            Ok(pair) => pair,
            Err(_) => return refused_or_lost(&conn),
        };
        let mut reader = FrameReader::new(recv, 64 * 1024);
        match reader.next().await {
            Ok(Some(Frame::Notice(n))) => match n.kind {
                NoticeKind::Drain => {
                    tracing::info!(reason = %n.reason, "the hub asks this spoke to drain")
                }
                NoticeKind::Revoked => {
                    tracing::error!(reason = %n.reason, "the hub revoked this spoke")
                }
                NoticeKind::InvalidateGrants => {
                    tracing::debug!(reason = %n.reason, "dropping cached grants");
                    on_invalidate();
                }
            },
            other => {
                tracing::warn!(frame = ?other.ok().flatten(), "unexpected stream from the hub")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_jitter_stays_in_range() {
        let (i, m) = (Duration::from_millis(500), Duration::from_secs(30));
        let mut b = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let next = next_backoff(b, i, m);
            seen.push(next.as_millis());
            b = Some(next);
        }
        assert_eq!(
            seen,
            vec![
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        assert_eq!(jitter(Duration::from_secs(10), 0.0), Duration::from_secs(5));
        assert_eq!(
            jitter(Duration::from_secs(10), 1.0),
            Duration::from_secs(10)
        );
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
