//! The spoke's end of the tunnel: connect to the hub over QUIC with the
//! spoke's certificate — or, when QUIC cannot get through (UDP blocked),
//! over TLS on TCP carrying the same frames on HTTP/2 streams — say hello,
//! send heartbeats, answer the hub's notices, and reconnect with jittered
//! exponential backoff when the tunnel is lost. On TCP, QUIC is tried again
//! every `quic_retry_secs`, and the tunnel moves back as soon as it works.
//! The current link is published on a watch channel for the HTTP front.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use ferry_common::link::{Link, RecvHalf, SendHalf, TcpLink};
use ferry_common::proto::HubAddrs;
use ferry_common::proto::{
    ALPN, Frame, Heartbeat, Hello, Notice, NoticeKind, PROTOCOL_VERSION, SteeringAnnounce,
};
use ferry_common::tunnel_io::{FrameReader, bind_udp, close};
use rustls::pki_types::ServerName;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{HubTarget, SpokeConfig};
use crate::identity::Identity;
use crate::metrics::{Metrics, ReconnectCause};
use crate::steering::ClientRtts;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a link replaced by a better one stays open for the requests
/// still on it.
const SWITCH_GRACE: Duration = Duration::from_secs(5);

/// The tunnels as the rest of the spoke sees them: one per hub, in order
/// of preference. Hubs learned while running are added at the end.
#[derive(Debug, Clone, Default)]
pub struct TunnelHandle {
    rx: Arc<std::sync::RwLock<Vec<watch::Receiver<Option<Link>>>>>,
}

impl TunnelHandle {
    /// One more tunnel, after the others: the sender its connector
    /// publishes on.
    pub fn add(&self) -> watch::Sender<Option<Link>> {
        let (tx, rx) = watch::channel(None);
        self.rx.write().expect("tunnel handle poisoned").push(rx);
        tx
    }

    /// The first live link (the primary hub's when it is up).
    pub fn current(&self) -> Option<Link> {
        self.rx
            .read()
            .expect("tunnel handle poisoned")
            .iter()
            .find_map(|rx| rx.borrow().clone().filter(|l| !l.is_closed()))
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

/// An established tunnel: its link and its control stream.
struct Control {
    link: Link,
    send: SendHalf,
    reader: FrameReader<RecvHalf>,
    interval: Duration,
}

/// How a session ended.
enum Ended {
    /// Shut down on purpose.
    Stopped,
    /// A better link (QUIC, after running on TCP) is ready.
    Switch(Control),
}

/// Everything needed to connect.
struct Connector {
    target: HubTarget,
    endpoint: quinn::Endpoint,
    tls: Arc<rustls::ClientConfig>,
    server_name: String,
    cfg: Arc<SpokeConfig>,
    announce: Option<SteeringAnnounce>,
    client_rtts: Arc<ClientRtts>,
    /// Where what the hub says about the hubs goes.
    learned: mpsc::UnboundedSender<Learned>,
}

impl Connector {
    fn new(
        cfg: Arc<SpokeConfig>,
        identity: Identity,
        target: HubTarget,
        shared: &Shared,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.hub_ca)?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(identity.cert, identity.key)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let tls = Arc::new(tls);
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from((*tls).clone())?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(cfg.tunnel.limits().transport()));
        let local: SocketAddr = if target.quic.is_ipv4() {
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
        Ok(Self {
            target,
            endpoint,
            tls,
            server_name: identity.server_name,
            learned: shared.learned.clone(),
            cfg,
            announce: shared.announce.clone(),
            client_rtts: shared.client_rtts.clone(),
        })
    }

    /// QUIC first; TLS over TCP when QUIC cannot get through.
    async fn connect(&self) -> Result<Control, TunnelError> {
        match self.connect_quic().await {
            Ok(c) => Ok(c),
            Err(e @ TunnelError::Refused(_)) => Err(e),
            Err(e) => {
                tracing::info!(error = %e, "QUIC did not get through; trying TLS over TCP");
                self.connect_tcp().await
            }
        }
    }

    async fn connect_quic(&self) -> Result<Control, TunnelError> {
        let connecting = self
            .endpoint
            .connect(self.target.quic, &self.server_name)
            .map_err(|e| TunnelError::Connect(e.to_string()))?;
        let limit = Duration::from_millis(self.cfg.tunnel.quic_handshake_timeout_ms);
        let conn = match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(TunnelError::Connect(e.to_string())),
            Err(_) => return Err(TunnelError::Connect("the QUIC handshake timed out".into())),
        };
        self.hello(Link::Quic(conn)).await
    }

    async fn connect_tcp(&self) -> Result<Control, TunnelError> {
        let addr = self.target.tcp;
        let connect = |e: &dyn std::fmt::Display| TunnelError::Connect(format!("TCP: {e}"));
        let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| connect(&"timed out"))?
            .map_err(|e| connect(&e))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.server_name.clone()).map_err(|e| connect(&e))?;
        let tls = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| connect(&"TLS timed out"))?
        .map_err(|e| connect(&e))?;
        let limits = self.cfg.tunnel.limits();
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(limits.stream_window_bytes)
            .initial_connection_window_size(limits.connection_window_bytes)
            .max_frame_size(16 * 1024 * 1024 - 1)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| connect(&e))?;
        let done = CancellationToken::new();
        let watch = done.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "TCP tunnel ended") },
                _ = watch.cancelled() => {}
            }
            watch.cancel();
        });
        self.hello(Link::Tcp(TcpLink { sender, done })).await
    }

    /// Opens the control stream and exchanges hello and welcome.
    async fn hello(&self, link: Link) -> Result<Control, TunnelError> {
        let lost = |e: &dyn std::fmt::Display| TunnelError::Lost(e.to_string());
        let (mut send, recv) = link
            .open_bi()
            .await
            .map_err(|e| refused_or_lost(&link, e))?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            spoke: self.cfg.name.clone(),
            software: env!("CARGO_PKG_VERSION").to_owned(),
            steering: self.announce.clone(),
        };
        send.send_frame(&Frame::Hello(hello))
            .await
            .map_err(|e| lost(&e))?;
        let mut reader = FrameReader::new(recv, self.cfg.tunnel.max_frame_bytes);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
            Ok(Ok(Some(Frame::Welcome(w)))) => {
                let interval = Duration::from_millis(w.heartbeat_interval_ms.clamp(100, 60_000));
                self.client_rtts.set_prefixes(w.client_prefixes);
                self.learn(Some(w.hub_id), w.hubs);
                Ok(Control {
                    link,
                    send,
                    reader,
                    interval,
                })
            }
            Ok(Ok(Some(Frame::Refuse(r)))) => {
                Err(TunnelError::Refused(format!("{}: {}", r.code, r.reason)))
            }
            Ok(Ok(other)) if other.is_some() => {
                Err(TunnelError::Refused(format!("unexpected answer {other:?}")))
            }
            Ok(Ok(_)) | Ok(Err(_)) => {
                Err(refused_or_lost(&link, "the control stream ended".into()))
            }
            Err(_) => Err(TunnelError::Lost("no welcome in time".into())),
        }
    }
}

impl Connector {
    /// Passes on what a `welcome` (the hub's id and list) or a notice (the
    /// list) says, for [`hold`].
    fn learn(&self, hub_id: Option<String>, hubs: Vec<HubAddrs>) {
        let _ = self.learned.send(Learned {
            target: self.target.index,
            hub_id: hub_id.filter(|id| !id.is_empty()),
            hubs,
        });
    }
}

/// What one tunnel learned about the hubs (nothing, when an attempt to
/// connect failed).
#[derive(Debug)]
pub struct Learned {
    /// The tunnel's index.
    target: usize,
    /// The id of the hub at its other end.
    hub_id: Option<String>,
    /// Every hub of that hub's store (empty: the hub did not say).
    hubs: Vec<HubAddrs>,
}

/// One tunnel [`hold`] runs.
struct Held {
    target: HubTarget,
    /// The hub's id, once known.
    id: Option<String>,
    /// Whether it connected or failed to at least once.
    tried: bool,
    /// Stops this tunnel alone.
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Holds a tunnel to every hub until `shared.shutdown`: those configured
/// (primary first), those saved from the last run, and each one a hub
/// lists later, which is saved for the next start. A hub reached under
/// two addresses keeps one tunnel, the one listed first: hubs not in the
/// configuration wait until each configured one has answered with its id
/// (or failed to connect once), so a hub configured under one address and
/// listed under another is known for the same.
pub async fn hold(
    cfg: Arc<SpokeConfig>,
    identity: Identity,
    handle: TunnelHandle,
    shared: Shared,
    mut learned: mpsc::UnboundedReceiver<Learned>,
) -> anyhow::Result<()> {
    let mut held: Vec<Held> = Vec::new();
    let spawn = |held: &mut Vec<Held>, quic: SocketAddr, tcp: SocketAddr, id: Option<String>| {
        let target = HubTarget {
            index: held.len(),
            quic,
            tcp,
        };
        shared.client_rtts.ensure_hubs(held.len() + 1);
        let stop = shared.shutdown.child_token();
        let task = tokio::spawn(run(
            cfg.clone(),
            target,
            identity.clone(),
            handle.add(),
            Shared {
                shutdown: stop.clone(),
                ..shared.clone()
            },
        ));
        held.push(Held {
            target,
            id,
            tried: false,
            stop,
            task,
        });
    };
    let holds = |held: &[Held], h: &HubAddrs| {
        held.iter().any(|t| {
            !t.stop.is_cancelled()
                && (t.id.as_deref() == Some(&h.id) || t.target.quic == h.tunnel_addr)
        })
    };
    for t in cfg.hub.targets() {
        spawn(&mut held, t.quic, t.tcp, None);
    }
    let configured = held.len();
    let mut pending: Vec<HubAddrs> = identity.hubs.clone();
    loop {
        let l = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            l = learned.recv() => match l {
                Some(l) => l,
                None => break,
            },
        };
        held[l.target].tried = true;
        if let Some(id) = l.hub_id {
            held[l.target].id = Some(id.clone());
            // The same hub under another address: keep the first.
            let same: Vec<usize> = (0..held.len())
                .filter(|&i| !held[i].stop.is_cancelled() && held[i].id.as_deref() == Some(&id))
                .collect();
            for &i in same.iter().skip(1) {
                tracing::info!(hub = %held[i].target.quic, hub.id = %id, "a second address of a hub this spoke holds a tunnel to: closing it");
                held[i].stop.cancel();
            }
        }
        if !l.hubs.is_empty() {
            if let Err(e) = crate::identity::save_hubs(&cfg.state_dir, &l.hubs) {
                tracing::warn!(error = %e, "could not keep the list of hubs");
            }
            pending = l.hubs;
        }
        if pending.is_empty() || !held[..configured].iter().all(|h| h.tried) {
            continue;
        }
        for h in std::mem::take(&mut pending) {
            if holds(&held, &h) {
                continue;
            }
            if held.len() >= MAX_TUNNELS {
                tracing::warn!(hub = %h.tunnel_addr, "too many hubs: not opening a tunnel");
                continue;
            }
            tracing::info!(hub = %h.tunnel_addr, hub.id = %h.id, "a hub this spoke holds no tunnel to: opening one");
            spawn(
                &mut held,
                h.tunnel_addr,
                h.tunnel_tcp_addr,
                Some(h.id.clone()),
            );
        }
    }
    shared.shutdown.cancel();
    let mut result = Ok(());
    for h in held {
        let r = h.task.await.context("a tunnel task failed").and_then(|r| r);
        if result.is_ok() {
            result = r;
        }
    }
    result
}

/// The most tunnels a spoke holds, configured and learned.
const MAX_TUNNELS: usize = 2 * ferry_common::proto::MAX_HUBS;

fn refused_or_lost(link: &Link, fallback: String) -> TunnelError {
    if let Link::Quic(conn) = link {
        match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(c))
                if c.error_code == close::REVOKED.into() =>
            {
                return TunnelError::Refused(
                    "this spoke is unknown to the hub or was revoked".into(),
                );
            }
            Some(reason) => return TunnelError::Lost(reason.to_string()),
            None => {}
        }
    }
    TunnelError::Lost(fallback)
}

/// What every hub's tunnel loop shares with the rest of the spoke.
#[derive(Clone)]
pub struct Shared {
    /// The spoke's metrics.
    pub metrics: Arc<Metrics>,
    /// Fires when the spoke starts draining.
    pub draining: CancellationToken,
    /// Fires when the tunnel must close.
    pub shutdown: CancellationToken,
    /// Drops cached grants (on the hub's notice).
    pub on_invalidate: Arc<dyn Fn() + Send + Sync>,
    /// What the hub's DNS needs to steer clients here.
    pub announce: Option<SteeringAnnounce>,
    /// Client RTTs for the next heartbeat.
    pub client_rtts: Arc<ClientRtts>,
    /// Where each tunnel says what it learned about the hubs.
    pub learned: mpsc::UnboundedSender<Learned>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Keeps a tunnel to one hub up until `shutdown`. When `draining` fires
/// first, the hub is told (so it stops sending clients here) while the
/// tunnel stays up for the requests still in flight.
async fn run(
    cfg: Arc<SpokeConfig>,
    target: HubTarget,
    identity: Identity,
    publish: watch::Sender<Option<Link>>,
    shared: Shared,
) -> anyhow::Result<()> {
    let connector = Connector::new(cfg.clone(), identity, target, &shared)?;
    let Shared {
        metrics,
        draining,
        shutdown,
        on_invalidate,
        ..
    } = shared;
    let hub = target.index;
    let initial = Duration::from_millis(cfg.tunnel.reconnect_initial_ms);
    let max = Duration::from_secs(cfg.tunnel.reconnect_max_secs);
    let mut backoff: Option<Duration> = None;
    let mut ready: Option<Control> = None;
    loop {
        let attempt = async {
            let control = match ready.take() {
                Some(c) => c,
                None => connector.connect().await?,
            };
            backoff = None;
            let link = control.link.clone();
            // Publish before announcing: whoever reads "tunnel up" can use it.
            let _ = publish.send(Some(link.clone()));
            metrics.tunnel_up(hub, link.transport(), true);
            tracing::info!(hub = %target.quic, hub.index = hub, transport = link.transport(), "tunnel up");
            let signals = Signals {
                metrics: &metrics,
                draining: &draining,
                shutdown: &shutdown,
                on_invalidate: &*on_invalidate,
                connector: &connector,
            };
            let result = session(control, &signals).await;
            metrics.tunnel_up(hub, link.transport(), false);
            if !matches!(result, Ok(Ended::Switch(_))) {
                let _ = publish.send(None);
            } else {
                // Let requests still on the old link finish, then close it.
                tokio::spawn(async move {
                    tokio::time::sleep(SWITCH_GRACE).await;
                    link.close(close::REPLACED, b"moved to a better transport");
                });
            }
            result
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = shutdown.cancelled() => Ok(Ended::Stopped),
        };
        if shutdown.is_cancelled() {
            break;
        }
        let err = match outcome {
            Ok(Ended::Switch(control)) => {
                tracing::info!("QUIC works again: moving the tunnel back to QUIC");
                ready = Some(control);
                continue;
            }
            Ok(Ended::Stopped) => TunnelError::Lost("closed".into()),
            Err(e) => e,
        };
        metrics.reconnect(err.cause());
        connector.learn(None, Vec::new());
        let wait = jitter(next_backoff(backoff, initial, max), random_unit());
        backoff = Some(next_backoff(backoff, initial, max));
        tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "tunnel down");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    connector
        .endpoint
        .close(close::SHUTDOWN.into(), b"spoke shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), connector.endpoint.wait_idle()).await;
    Ok(())
}

/// What a tunnel session answers to besides the hub.
struct Signals<'a> {
    metrics: &'a Metrics,
    draining: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    on_invalidate: &'a (dyn Fn() + Send + Sync),
    connector: &'a Connector,
}

async fn session(control: Control, signals: &Signals<'_>) -> Result<Ended, TunnelError> {
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
        on_invalidate,
        connector,
    } = *signals;
    let on_tcp = matches!(link, Link::Tcp(_));
    let mut told_draining = false;
    let mut tick = tokio::time::interval(interval);
    let mut probe =
        tokio::time::interval(Duration::from_secs(connector.cfg.tunnel.quic_retry_secs));
    probe.tick().await;
    type Attempt<'a> = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Control, TunnelError>> + Send + 'a>,
    >;
    let mut attempt: Attempt<'_> = Box::pin(std::future::pending());
    let mut probing = false;
    let mut seq = 0u64;
    let mut last_ack = Instant::now();
    let (mut last_total, mut last_at) = (metrics.content_total(), Instant::now());
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
                    return Err(refused_or_lost(&link, "the control stream failed".into()));
                }
                tracing::info!("told the hub this spoke is draining");
            }
            _ = probe.tick(), if on_tcp && !told_draining && !probing => {
                // The probe runs beside the heartbeats, not instead of them.
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
                if last_ack.elapsed() > interval * 3 {
                    link.close(close::PROTOCOL, b"heartbeats unanswered");
                    return Err(TunnelError::Silent);
                }
                seq += 1;
                let total = metrics.content_total();
                let secs = last_at.elapsed().as_secs_f64().max(0.001);
                let bytes_per_sec = (total.saturating_sub(last_total) as f64 / secs) as u64;
                (last_total, last_at) = (total, Instant::now());
                let hb = Heartbeat {
                    seq,
                    active_transfers: metrics.active_now(),
                    bytes_per_sec,
                    client_rtts: connector.client_rtts.take(connector.target.index),
                };
                if send.send_frame(&Frame::Heartbeat(hb)).await.is_err() {
                    return Err(refused_or_lost(&link, "the control stream failed".into()));
                }
            }
            frame = reader.next() => match frame {
                Ok(Some(Frame::HeartbeatAck(_))) => {
                    last_ack = Instant::now();
                    metrics.rtt(connector.target.index, link.rtt());
                }
                Ok(Some(Frame::Notice(n))) => match n.kind {
                    NoticeKind::Drain => tracing::info!(reason = %n.reason, "the hub asks this spoke to drain"),
                    NoticeKind::Revoked => tracing::error!(reason = %n.reason, "the hub revoked this spoke"),
                    NoticeKind::InvalidateGrants => {
                        tracing::debug!(reason = %n.reason, "dropping cached grants");
                        on_invalidate();
                    }
                    NoticeKind::Hubs => connector.learn(None, n.hubs),
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
