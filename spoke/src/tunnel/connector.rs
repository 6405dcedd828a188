//! Opens one tunnel to one hub: QUIC first, TLS over TCP (HTTP/2 streams)
//! when QUIC cannot get through, then the hello/welcome exchange on the
//! control stream (decided by `ferry_common::proto::handshake`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_common::link::{Link, RecvHalf, SendHalf, TcpLink};
use ferry_common::proto::handshake::{self, NotWelcomed};
use ferry_common::proto::{ALPN, Frame, HubAddrs, SteeringAnnounce};
use ferry_common::tunnel_io::{FrameReader, bind_udp, close};
use rustls::pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::supervisor::Learned;
use crate::config::{HubTarget, SpokeConfig};
use crate::identity::Identity;
use crate::metrics::ReconnectCause;
use crate::steering::ClientRtts;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a tunnel attempt or session ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum TunnelError {
    /// The hub could not be reached: try again after a backoff.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The hub refused this spoke (unknown, revoked, or its hello): trying
    /// again helps only once an operator changed something.
    #[error("the hub refused the tunnel: {0}")]
    Refused(String),
    /// The tunnel broke: try again after a backoff.
    #[error("the tunnel was lost: {0}")]
    Lost(String),
    /// The hub stopped acknowledging heartbeats: try again.
    #[error("heartbeats went unanswered")]
    Silent,
}

impl TunnelError {
    /// The label the reconnect counter takes.
    pub(super) fn cause(&self) -> ReconnectCause {
        match self {
            Self::Connect(_) => ReconnectCause::connect,
            Self::Refused(_) => ReconnectCause::refused,
            Self::Lost(_) => ReconnectCause::lost,
            Self::Silent => ReconnectCause::heartbeat,
        }
    }
}

/// An established tunnel: its link and its control stream.
pub(super) struct Control {
    pub(super) link: Link,
    pub(super) send: SendHalf,
    pub(super) reader: FrameReader<RecvHalf>,
    pub(super) interval: Duration,
}

/// Everything needed to connect to one hub.
pub(super) struct Connector {
    pub(super) target: HubTarget,
    pub(super) endpoint: quinn::Endpoint,
    tls: Arc<rustls::ClientConfig>,
    server_name: String,
    pub(super) cfg: Arc<SpokeConfig>,
    announce: Option<SteeringAnnounce>,
    pub(super) client_rtts: Arc<ClientRtts>,
    /// Where what the hub says about the hubs goes.
    learned: mpsc::UnboundedSender<Learned>,
}

impl Connector {
    /// A connector to `target` with the spoke's `identity`.
    pub(super) fn new(
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
            .with_client_cert_resolver(identity.client);
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
    pub(super) async fn connect(&self) -> Result<Control, TunnelError> {
        match self.connect_quic().await {
            Ok(c) => Ok(c),
            Err(e @ TunnelError::Refused(_)) => Err(e),
            Err(e) => {
                tracing::info!(error = %e, "QUIC did not get through; trying TLS over TCP");
                self.connect_tcp().await
            }
        }
    }

    /// A tunnel over QUIC only.
    pub(super) async fn connect_quic(&self) -> Result<Control, TunnelError> {
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
        self.hello(Link::Tcp(TcpLink::new(sender, done))).await
    }

    /// Opens the control stream and exchanges hello and welcome; a link
    /// that is not welcomed is closed.
    async fn hello(&self, link: Link) -> Result<Control, TunnelError> {
        let result = self.exchange(&link).await;
        if result.is_err() {
            link.close(close::PROTOCOL, b"not welcomed");
        }
        result
    }

    async fn exchange(&self, link: &Link) -> Result<Control, TunnelError> {
        let (mut send, recv) = link
            .open_bi()
            .await
            .map_err(|e| refused_or_lost(link, e.to_string()))?;
        let hello = handshake::hello(&self.cfg.name, self.announce.clone());
        send.send_frame(&Frame::Hello(hello))
            .await
            .map_err(|e| TunnelError::Lost(e.to_string()))?;
        let mut reader = FrameReader::new(recv, self.cfg.tunnel.max_frame_bytes);
        let answer = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(refused_or_lost(link, e.to_string())),
            Err(_) => return Err(TunnelError::Lost("no welcome in time".into())),
        };
        match handshake::read_welcome(answer) {
            Ok(w) => {
                self.client_rtts.set_prefixes(w.client_prefixes);
                self.learn(w.hub_id, w.hubs);
                Ok(Control {
                    link: link.clone(),
                    send,
                    reader,
                    interval: w.heartbeat_interval,
                })
            }
            Err(NotWelcomed::Refused(r)) => Err(TunnelError::Refused(r.to_string())),
            Err(NotWelcomed::Unexpected(what)) => {
                Err(TunnelError::Refused(format!("unexpected answer {what}")))
            }
            Err(NotWelcomed::Ended) => {
                Err(refused_or_lost(link, "the control stream ended".into()))
            }
        }
    }

    /// Passes on what a `welcome` (the hub's id and list) or a notice (the
    /// list) says, for the supervisor.
    pub(super) fn learn(&self, hub_id: Option<String>, hubs: Vec<HubAddrs>) {
        let _ = self.learned.send(Learned {
            target: self.target.index,
            quic: self.target.quic,
            hub_id,
            hubs,
        });
    }
}

/// What a failed link means: refused when the hub closed it as unknown or
/// revoked, lost otherwise.
pub(super) fn refused_or_lost(link: &Link, fallback: String) -> TunnelError {
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
